#!/usr/bin/env python3
"""Benchmark `colorfilter select` at scale against a bare one-pass baseline; print JSON.

For N rows (and N/10, to check that time grows linearly) it builds a synthetic run directory in
the real formats: token shards as prepare writes them (io/token_shards.TOKEN_SCHEMA, names
`<file>-<part>.parquet`, prepare's completion records with part hashes), score shards with their
completion records (scoring/shard.SCORE_SCHEMA), the bundled tokenizer, a config. Then it times
  - `colorfilter select` (a child process: the CLI a user runs, all taus at once), and
  - the baseline, in one process: compute the same top-k cuts in memory, read every token and
    score shard once with pyarrow, decode each selected row's text once, write each selection
    with input_ids and text as zstd parquet (no shuffle, no card, no manifest),
sampling the peak RSS of the driver and of every worker process. The projection scales the
measured per-core token rate to full C4 (340M chunks of 512 tokens) on one 16-core node and on
8 such nodes, plus the driver's serial top-k at its measured row rate.

    python scripts/bench_scale.py                       # 2M rows at seq_len 128, ~10 min on 2 cores
    python scripts/bench_scale.py --rows 200000 --tmp /tmp/bench-scale
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
C4_ROWS, C4_SEQ_LEN = 340_000_000, 512
PARTS_PER_FILE = 8


def build_run(root: Path, n_rows: int, seq_len: int, rows_per_shard: int, taus: list) -> Path:
    """A prepared and scored run directory of `n_rows` chunks; returns its config path."""
    from tokenizers import Tokenizer

    from colorfilter.io.storage import file_sha256 as sha256_file
    from colorfilter.io.token_shards import TOKEN_SCHEMA, make_seq_ids
    from colorfilter.scoring.shard import SCORE_SCHEMA

    shutil.copytree(REPO / "data" / "sample" / "tokenizer", root / "tokenizer")
    vocab = Tokenizer.from_file(str(root / "tokenizer" / "tokenizer.json")).get_vocab_size()
    token_dir, score_dir = root / "tokens" / "pool", root / "scores" / "pool"
    for directory in (token_dir / "_done", score_dir / "_done"):
        directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records: dict[int, dict] = {}
    for shard, start in enumerate(range(0, n_rows, rows_per_shard)):
        n = min(rows_per_shard, n_rows - start)
        file_index, part = divmod(shard, PARTS_PER_FILE)
        name = f"{file_index:05d}-{part:05d}.parquet"
        ids = make_seq_ids(file_index, part * rows_per_shard, n)
        values = rng.integers(0, vocab, size=n * seq_len, dtype=np.int32)
        offsets = np.arange(0, n * seq_len + 1, seq_len, dtype=np.int32)
        doc = np.arange(n) // 3
        tokens = pa.table(
            {
                "seq_id": pa.array(ids, pa.uint64()),
                "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
                "n_tokens": pa.array(np.full(n, seq_len, np.int32)),
                "source_file": pa.array([f"c4-{file_index:05d}.json.gz"] * n),
                "doc_first": pa.array(doc, pa.int64()),
                "doc_last": pa.array(doc + 1, pa.int64()),
                "doc_offset": pa.array((np.arange(n) % 3) * 40, pa.int32()),
                "source": pa.array(np.where(np.arange(n) % 50 == 0, "books", "web")),
            },
            schema=TOKEN_SCHEMA,
        )
        pq.write_table(tokens, token_dir / name, compression="zstd")
        record = records.setdefault(file_index, {"part_bytes": {}, "part_sha256": {}})
        record["part_bytes"][name] = (token_dir / name).stat().st_size
        record["part_sha256"][name] = sha256_file(token_dir / name)
        prior = rng.uniform(3.0, 6.0, n).astype(np.float32)
        cond = (prior - rng.normal(0.0, 0.5, n)).astype(np.float32)
        scores = pa.table(
            [ids, prior, cond, prior - cond, np.full(n, seq_len, np.int32)], schema=SCORE_SCHEMA
        )
        pq.write_table(scores, score_dir / name, compression="zstd")
        done = {"rows": n, "sha256": sha256_file(score_dir / name)}
        done["bytes"] = (score_dir / name).stat().st_size
        (score_dir / "_done" / f"{Path(name).stem}.json").write_text(json.dumps(done))
    for file_index, record in records.items():
        (token_dir / "_done" / f"{file_index:05d}.json").write_text(json.dumps(record))
    mark_finished(root)
    config = root.parent / f"{root.name}.yaml"  # not root/config.yaml: select saves that
    config.write_text(
        json.dumps(
            {
                "output_dir": str(root),
                "seq_len": seq_len,
                "tokenizer": str(root / "tokenizer"),
                "device": "cpu",
                "ray": {"num_cpus": 2, "object_store_memory_mb": 400},
                "selection": {"methods": ["color"], "tau": taus},
            }
        )
    )
    return config


def mark_finished(root: Path) -> None:
    """The prepare and score markers the stages write last (select requires both)."""
    from colorfilter.io import storage
    from colorfilter.layout import RunLayout

    run = RunLayout.at(str(root))
    tokenizer = [info.location for info in storage.find(run.tokenizer)]
    tokenizer_sha256 = storage.folder_sha256(run.tokenizer)
    run.finish_stage("prepare", tokenizer, {"tokenizer_sha256": tokenizer_sha256})
    storage.write_json(run.score_stats, {"synthetic": True})
    run.finish_stage("score", [run.score_stats], {})


class PeakRss:
    """Samples the RSS of a process and of each of its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self.root = psutil.Process(pid)
        self.driver = 0
        self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.driver = max(self.driver, self.root.memory_info().rss)
                for child in self.root.children(recursive=True):
                    with_name = " ".join(child.cmdline()[:3])
                    if "ray::" in with_name or "default_worker" in with_name:
                        self.worker = max(self.worker, child.memory_info().rss)
            except psutil.Error:
                pass
            self._stop.wait(interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"driver_peak_rss_mib": _mib(self.driver), "worker_peak_rss_mib": _mib(self.worker)}


def _mib(value: int) -> float:
    return round(value / 2**20, 1)


def timed_child(command: list[str], env: dict) -> dict:
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rss = PeakRss(process.pid)
    out, err = process.communicate()
    seconds = time.perf_counter() - start
    memory = rss.stop()
    if process.returncode:
        raise RuntimeError(f"{command} failed:\n{err.decode()[-3000:]}")
    return {"seconds": round(seconds, 2), **memory, "stdout": out.decode()}


def baseline(root: Path, out: Path, taus: list[float]) -> None:
    """The bare one-pass baseline (runs in a child process)."""
    from colorfilter.dataset.decode import load_decoder
    from colorfilter.dataset.runs import token_lists
    from colorfilter.io.token_shards import list_shards

    token_paths = list_shards(root / "tokens" / "pool")
    score_paths = [root / "scores" / "pool" / p.name for p in token_paths]
    scores = pq.read_table(score_paths, columns=["seq_id", "score"])
    ids, score = scores.column("seq_id").to_numpy(), scores.column("score").to_numpy()
    order = np.lexsort((ids, -score))
    chosen = {tau: np.sort(ids[order[: int(len(ids) // tau)]]) for tau in taus}
    decode = load_decoder(root / "tokenizer")
    out.mkdir(parents=True, exist_ok=True)
    writers: dict = {}
    for token_path, score_path in zip(token_paths, score_paths):
        table = pq.read_table(token_path)
        shard_scores = pq.read_table(score_path)
        shard_ids = table.column("seq_id").to_numpy()
        masks = {tau: np.isin(shard_ids, sel, assume_unique=True) for tau, sel in chosen.items()}
        union = np.flatnonzero(np.logical_or.reduce(list(masks.values())))
        rows = table.take(pa.array(union))
        text = pa.array(decode(token_lists(rows.column("input_ids"))), pa.string())
        rows = rows.append_column("text", text)
        score_of = dict(zip(shard_scores.column("seq_id").to_numpy(), range(len(shard_ids))))
        at = np.array([score_of[i] for i in rows.column("seq_id").to_numpy()], dtype=np.int64)
        rows = rows.append_column("score", shard_scores.column("score").take(pa.array(at)))
        for tau, mask in masks.items():
            part = rows.take(pa.array(np.flatnonzero(mask[union])))
            if tau not in writers:
                writers[tau] = pq.ParquetWriter(out / f"tau{tau:g}.parquet", part.schema,
                                                compression="zstd")  # fmt: skip
            writers[tau].write_table(part)
    for writer in writers.values():
        writer.close()


def driver_topk_seconds(root: Path, taus: list[float]) -> float:
    """The select driver's serial part: the exact streaming top-k over the score shards."""
    from colorfilter.io.token_shards import list_shards
    from colorfilter.selection import ParquetSource, select_many

    start = time.perf_counter()
    select_many("color", ParquetSource(list_shards(root / "scores" / "pool")), taus)
    return time.perf_counter() - start


def bench(n_rows: int, args: argparse.Namespace, tmp: Path) -> dict:
    root = tmp / f"run-{n_rows}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = time.perf_counter()
    config = build_run(root, n_rows, args.seq_len, args.rows_per_shard, args.taus)
    build_s = time.perf_counter() - start
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    base = timed_child(
        [sys.executable, __file__, "--child-baseline", str(root), *map(str, args.taus)], env
    )
    sets = [f"executor={args.executor}", f"selection.num_workers={args.workers}"]
    select = timed_child(
        [sys.executable, "-m", "colorfilter", "select", str(config),
         *[arg for s in sets for arg in ("--set", s)]], env,
    )  # fmt: skip
    summaries = json.loads(select.pop("stdout"))
    base.pop("stdout")
    topk_s = driver_topk_seconds(root, args.taus)
    selected = {name: s["counts"]["selected"] for name, s in summaries.items()}
    result = {
        "rows": n_rows,
        "token_shards": len(list((root / "tokens" / "pool").glob("*.parquet"))),
        "build_s": round(build_s, 1),
        "select": {**select, "rows_per_s": round(n_rows / select["seconds"])},
        "baseline": {**base, "rows_per_s": round(n_rows / base["seconds"])},
        "ratio_to_baseline": round(select["seconds"] / base["seconds"], 3),
        "driver_topk_s": round(topk_s, 2),
        "selected": selected,
    }
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def projection(small: dict, big: dict, cores: int, seq_len: int) -> dict:
    """Full C4 from the measured rates: the marginal cost per token (the difference between N and
    N/10, so start-up is not smeared over the tokens) on every core, plus the driver's serial
    top-k at its row rate and the fixed start-up once."""
    extra_tokens = (big["rows"] - small["rows"]) * seq_len
    extra_core_s = (big["select"]["seconds"] - small["select"]["seconds"]) * cores
    per_token = max(extra_core_s, 0.0) / extra_tokens
    fixed = max(small["select"]["seconds"] - per_token * small["rows"] * seq_len / cores, 0.0)
    topk_c4 = big["driver_topk_s"] / big["rows"] * C4_ROWS
    c4_tokens = C4_ROWS * C4_SEQ_LEN
    out = {
        "c4_rows": C4_ROWS,
        "c4_seq_len": C4_SEQ_LEN,
        "core_us_per_token": round(per_token * 1e6, 4),
        "fixed_s": round(fixed, 1),
        "driver_topk_s": round(topk_c4),
    }
    for label, node_cores in (("one_16_core_node", 16), ("eight_16_core_nodes", 128)):
        seconds = fixed + topk_c4 + per_token * c4_tokens / node_cores
        out[label] = {"seconds": round(seconds), "hours": round(seconds / 3600, 2)}
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=float, default=2e6)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rows-per-shard", type=int, default=8192)
    parser.add_argument("--taus", type=float, nargs="+", default=[7, 16, 32, 64])
    parser.add_argument("--executor", default="ray", choices=["ray", "local"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tmp", default="/tmp/colorfilter-bench-scale")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child-baseline"]:
        root = Path(argv[1])
        baseline(root, root / "baseline", [float(t) for t in argv[2:]])
        return
    args = parse_args(argv)
    tmp = Path(args.tmp)
    n_rows = int(args.rows)
    small, big = bench(n_rows // 10, args, tmp), bench(n_rows, args, tmp)
    report = {
        "machine": {"cores": args.cores, "note": "shared with other jobs while measured"},
        "settings": {
            "seq_len": args.seq_len,
            "rows_per_shard": args.rows_per_shard,
            "taus": args.taus,
            "executor": args.executor,
            "workers": args.workers,
        },  # fmt: skip
        "small": small,
        "big": big,
        "linearity": round(big["select"]["seconds"] / (10 * small["select"]["seconds"]), 3),
        "projection": projection(small, big, args.cores, args.seq_len),
        "targets": {
            "ratio_to_baseline_max": 1.5,
            "driver_peak_rss_mib_max": 1024,
            "linearity_max": 1.3,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
