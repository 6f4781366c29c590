"""Benchmark prepare and select on local disk vs on a local S3 server; prints JSON.

The S3 server is moto in server mode on 127.0.0.1 (started here, stopped at the end), so the
ratio measures what the storage layer adds (listing, preflight, streamed reads through s3fs,
HTTP on loopback), not a network. Prepare: both runs read the same files (configs/demo.yaml's
inputs, copied to the bucket under the same names) and use the same Ray; one reads and writes
local disk, the other has inputs and output_dir on the bucket; the token shards are compared,
and `identical` says whether they match row for row (source_file aside). Select: the local
prepare's output gets seeded synthetic score shards (select's cost does not depend on the score
values; training and scoring models would take minutes), then select runs with output_dir on
local disk and on the bucket (the folder uploaded); `identical` compares indices.npy and every
data shard byte for byte. Each
configuration runs once to warm up, then `--repeat` times; the median is reported.

Usage: python scripts/bench_storage.py [--config configs/demo.yaml] [--repeat 3] [--workers 2]
       [--stages prepare,select] [--select-methods color,random] [--select-taus 8,16]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SPLITS = ("pool", "downstream_train", "downstream_eval")


def start_s3() -> tuple[object, str]:
    """A moto S3 server on a free loopback port, with the standard AWS variables pointing at it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                       "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    return server, endpoint


def upload_inputs(config, endpoint: str, bucket: str) -> tuple[dict[str, list[str]], int]:
    """Copy every configured input to the bucket; the same patterns as s3:// URLs, and bytes."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    fs.mkdir(bucket)
    remote, total = {}, 0
    for split in SPLITS:
        patterns = getattr(config.data, split)
        for pattern in patterns:
            for path in sorted(glob.glob(pattern)):
                fs.put_file(path, f"{bucket}/{Path(path).as_posix()}")
                total += os.path.getsize(path)
        remote[split] = [f"s3://{bucket}/{Path(p).as_posix()}" for p in patterns]
    return remote, total


def listing_at_scale(endpoint: str, bucket: str, n_files: int) -> dict:
    """resolve_inputs on a glob over `n_files` objects (C4 has 1024): must not cost one request
    per file. Objects are tiny; only listing, sizes and preflight are timed."""
    import s3fs

    from colorfilter.io.files import resolve_inputs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    fs.pipe({f"{bucket}/c4/c4-train.{i:05d}-of-{n_files:05d}.json.gz": b"x"
             for i in range(n_files)})
    start = time.perf_counter()
    items = resolve_inputs([f"s3://{bucket}/c4/*.json.gz"], "data.pool")
    seconds = time.perf_counter() - start
    assert len(items) == n_files
    return {"objects": n_files, "resolve_s": round(seconds, 3)}


def read_seconds(config_path: str, overrides: list[str], repeat: int) -> float:
    """Median seconds to read and parse every record of every input in this process (the
    readers alone: what the layer changes, without tokenization or Ray scheduling noise)."""
    from colorfilter.config import load_config
    from colorfilter.io.readers import iter_records
    from colorfilter.pipeline.prepare import list_all_inputs

    config = load_config(config_path, overrides)
    items = [i for split in list_all_inputs(config).values() for i in split]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            for _record in iter_records(item, config.data.text_field, config.data.source_field,
                                        storage=config.storage):
                pass
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def run_once(config_path: str, overrides: list[str], out_dir: str) -> tuple[float, dict]:
    from colorfilter.config import load_config
    from colorfilter.pipeline.prepare import run_prepare

    config = load_config(config_path, [f"output_dir={out_dir}", *overrides])
    start = time.perf_counter()
    stats = run_prepare(config)
    return time.perf_counter() - start, stats


def shard_tables(out_dir: str) -> dict[str, object]:
    """Every token shard of a run (local or on the bucket), source_file aside (paths vs URLs)."""
    from colorfilter.io.token_shards import shard_locations
    from colorfilter.io.transfer import read_parquet
    from colorfilter.layout import RunLayout

    run = RunLayout.at(out_dir)
    return {f"{s}/{loc.name}": read_parquet(loc).drop(["source_file"])
            for s in SPLITS for loc in shard_locations(run.tokens(s))}


def listing_seconds(config_path: str, overrides: list[str], repeat: int) -> float:
    """The driver's serial part: resolve, size and preflight every input (median seconds)."""
    from colorfilter.config import load_config
    from colorfilter.pipeline.prepare import list_all_inputs

    config = load_config(config_path, overrides)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        list_all_inputs(config)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4)


def measure(config_path: str, overrides: list[str], tmp: str, label: str, repeat: int) -> dict:
    """`repeat` timed prepares after a warm-up, each into a fresh output_dir under `tmp` (a local
    folder or a bucket URL)."""
    run_once(config_path, overrides, f"{tmp}/{label}-warm")
    times = []
    for i in range(repeat):
        seconds, stats = run_once(config_path, overrides, f"{tmp}/{label}-{i}")
        times.append(seconds)
    pool = stats["pool"]
    return {"seconds": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "list_inputs_s": listing_seconds(config_path, overrides, 5),
            "read_records_s": read_seconds(config_path, overrides, 5),
            "files": pool["files"], "documents": pool["documents"], "tokens": pool["tokens"],
            "out": f"{tmp}/{label}-0"}


def fake_scores(out_dir: str) -> None:
    """Seeded score shards (and the stage's stats.json) for the pool token shards of out_dir."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from colorfilter.io.token_shards import list_shards

    scores = Path(out_dir) / "scores" / "pool"
    scores.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for path in list_shards(Path(out_dir) / "tokens" / "pool"):
        ids = pq.read_table(path, columns=["seq_id"]).column("seq_id")
        prior = rng.normal(5.0, 0.3, len(ids)).astype(np.float32)
        cond = (prior - rng.normal(0.0, 0.2, len(ids))).astype(np.float32)
        pq.write_table(pa.table({"seq_id": ids, "prior_loss": prior, "cond_loss": cond,
                                 "score": prior - cond}), scores / path.name)
    (scores / "stats.json").write_text(json.dumps({"synthetic": True}))


def select_once(config_path: str, overrides: list[str], out_dir: str) -> float:
    from colorfilter.config import load_config
    from colorfilter.io import storage
    from colorfilter.layout import RunLayout
    from colorfilter.pipeline.select import run_select

    config = load_config(config_path, [f"output_dir={out_dir}", *overrides])
    storage.remove(RunLayout.of(config).selected_root, recursive=True)
    start = time.perf_counter()
    run_select(config)
    return time.perf_counter() - start


def selected_files(out_dir: str) -> dict[str, bytes]:
    """Every selection's indices.npy and data shards (bytes), by relative path."""
    from colorfilter.io import storage

    root = storage.Location.parse(out_dir).join("selected")
    return {info.location.relative_to(root): storage.read_bytes(info.location)
            for info in storage.find(root)
            if info.location.name == "indices.npy" or info.location.name.endswith(".parquet")}


def measure_select(config_path: str, overrides: list[str], prepared: str, bucket: str,
                   repeat: int) -> dict:
    """select with output_dir on local disk, then on the bucket (same inputs): seconds, ratio."""
    from colorfilter.io.transfer import upload_folder

    fake_scores(prepared)
    remote = f"s3://{bucket}/select"
    upload_folder(prepared, remote)
    result = {}
    for label, out in (("local_disk", prepared), ("s3_loopback", remote)):
        select_once(config_path, overrides, out)  # warm-up
        times = [select_once(config_path, overrides, out) for _ in range(repeat)]
        result[label] = {"seconds": [round(t, 3) for t in times],
                         "median_s": round(statistics.median(times), 3),
                         "min_s": round(min(times), 3)}
    local_files, remote_files = selected_files(prepared), selected_files(remote)
    result["files"] = len(local_files)
    result["selected_bytes"] = sum(len(b) for b in local_files.values())
    result["identical"] = bool(local_files) and local_files == remote_files
    result["ratio_s3_over_local"] = round(
        result["s3_loopback"]["median_s"] / result["local_disk"]["median_s"], 3)
    return result


def bench_prepare(args, config, remote: dict, input_bytes: int, tmp: str) -> tuple[dict, str]:
    """Prepare on local inputs vs bucket inputs: the result keys, and a local prepared run."""
    common = ["executor=ray", f"prepare.num_workers={args.workers}",
              f"prepare.worker_cpus={2 / max(args.workers, 2)}"]
    if "prepare" not in args.stages:  # select alone: prepare once, untimed, for its inputs
        run_once(args.config, common, f"{tmp}/local-0")
        return {}, f"{tmp}/local-0"
    s3_overrides = [f"data.{s}=[{','.join(remote[s])}]" for s in SPLITS]
    local = measure(args.config, common, tmp, "local", args.repeat)
    bucket = measure(args.config, common + s3_overrides, "s3://bench-inputs/out", "s3",
                     args.repeat)  # inputs and output_dir on the bucket
    prepared = local.pop("out")
    return {
        "inputs": {"files": sum(len(glob.glob(p)) for s in SPLITS for p in getattr(config.data, s)),
                   "bytes": input_bytes},
        "local_disk": local,
        "s3_loopback": bucket,
        "ratio_s3_over_local": round(bucket["median_s"] / local["median_s"], 3),
        "ratio_of_fastest_runs": round(bucket["min_s"] / local["min_s"], 3),
        "ratio_read_records": round(bucket["read_records_s"] / local["read_records_s"], 3),
        "identical": shard_tables(prepared) == shard_tables(bucket.pop("out")),
    }, prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--listing-files", type=int, default=1024)
    parser.add_argument("--stages", default="prepare,select", help="prepare, select or both")
    parser.add_argument("--select-methods", default="color,random")
    parser.add_argument("--select-taus", default="8,16")
    args = parser.parse_args()
    args.stages = args.stages.split(",")
    server, endpoint = start_s3()  # before Ray starts, so its workers inherit the variables
    try:
        from colorfilter.config import RayConfig, load_config
        from colorfilter.pipeline.executor import init_ray

        config = load_config(args.config)
        remote, input_bytes = upload_inputs(config, endpoint, "bench-inputs")
        init_ray(RayConfig(num_cpus=2))
        with tempfile.TemporaryDirectory() as tmp:
            result, prepared = bench_prepare(args, config, remote, input_bytes, tmp)
            if "select" in args.stages:
                select_overrides = [
                    "executor=ray", f"selection.num_workers={args.workers}",
                    f"selection.worker_cpus={2 / max(args.workers, 2)}",
                    f"selection.methods=[{args.select_methods}]",
                    f"selection.tau=[{args.select_taus}]",
                ]
                result["select"] = measure_select(args.config, select_overrides, prepared,
                                                  "bench-inputs", args.repeat)
        if "prepare" in args.stages:
            result["listing_at_scale"] = listing_at_scale(endpoint, "bench-inputs",
                                                          args.listing_files)
    finally:
        server.stop()
    result = {"benchmark": "storage", "stages": args.stages, "workers": args.workers, **result}
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
