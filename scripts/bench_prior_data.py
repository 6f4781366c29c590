"""What each data-parallel rank reads and holds to train the prior: per-chunk vs block sampling.

Builds a synthetic pool of token shards (default 10^6 chunks of 128 tokens) with prepare's own
writer (Chunker + ShardWriter, TOKEN_SCHEMA), in row groups of `--row-group-rows`. Then, for
`prior.data_sampling` = chunks and blocks, each keep fraction (the paper's 1.8%, and 10%) and
world sizes 1 and 8, it runs every rank in its own process: plan the slice, load or stream
every local batch of the run (as the training loop asks for them), and report per rank:

- bytes_read: the process's read()/pread() bytes during the run (/proc/self/io rchar, which
  counts every byte pyarrow fetched from the shards: footers, columns, page-cache hits
  included; local files are not memory-mapped by pyarrow unless asked);
- token_bytes_touched: the compressed `input_ids` column chunks of the row groups this rank's
  chunks live in, from the parquet metadata (what the reader must fetch at the least);
- peak_rss_mb (ru_maxrss of the process; baseline_rss_mb is the same after the imports), and
  seconds (plan + every batch).

Every rank of a blocks run is measured; of a chunks run at world > 3 the first, middle and last
(each reads the whole token column; `bytes_read_all_ranks` is then scaled up), or all with
--all-ranks. `chunks_trained` sums the measured ranks.

Prints one JSON object. Usage:
    python scripts/bench_prior_data.py [--rows 1000000] [--seq-len 128] [--row-group-rows 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from colorfilter.chunking import Chunker
from colorfilter.io.token_shards import list_shards
from colorfilter.models.blocks import BlockData
from colorfilter.models.data import IndexedData, select_token_budget
from colorfilter.pipeline.prepare_parts import FileStats, ShardWriter


def build_pool(directory: Path, rows: int, seq_len: int, args: argparse.Namespace) -> None:
    """Input files of random documents, chunked and written as prepare writes them."""
    rng = np.random.default_rng(0)
    per_file = -(-rows // args.files)
    doc_tokens = seq_len * 64
    for file_index in range(args.files):
        chunker = Chunker(seq_len, file_index, f"input-{file_index}.jsonl")
        writer = ShardWriter(
            directory, file_index, args.rows_per_shard, chunker, FileStats(), args.row_group_rows
        )
        target = min(per_file, rows - file_index * per_file)
        for doc in range(-(-target * seq_len // doc_tokens)):
            chunker.add(doc, rng.integers(1, args.vocab, size=doc_tokens - 1, dtype=np.int32))
            writer.flush(final=False)
        writer.flush(final=True)


def rchar() -> int:
    with open("/proc/self/io") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("rchar"))


def token_bytes_touched(data, batches, rank: int, world: int, steps: int, batch: int) -> int:
    """Compressed input_ids bytes of the row groups holding this rank's chunks (metadata)."""
    groups: set[tuple[Path, int]] = set()
    if isinstance(data, BlockData):
        groups = {(b.path, b.row_group) for b in data.slice(world).rank_blocks(rank)}
    else:
        index, order = data.index, data.order[: steps * batch]
        needed = np.unique(order.reshape(steps, batch)[:, rank::world])
        for number in np.unique(index.file_index[needed]):
            metadata = pq.ParquetFile(index.paths[number]).metadata
            starts = np.cumsum([0] + [metadata.row_group(g).num_rows
                                      for g in range(metadata.num_row_groups)])  # fmt: skip
            rows = index.row_index[needed[index.file_index[needed] == number]]
            for group in np.unique(np.searchsorted(starts, rows, side="right") - 1):
                groups.add((index.paths[number], int(group)))
    total = 0
    for path, group in groups:
        row_group = pq.ParquetFile(path).metadata.row_group(group)
        names = [row_group.column(c).path_in_schema for c in range(row_group.num_columns)]
        total += row_group.column(names.index("input_ids.list.element")).total_compressed_size
    return total


def warm_up() -> None:
    """Read a tiny parquet file first, so the modules pyarrow imports on its first read (pandas
    among them, ~10 MB of .pyc) are not counted as bytes read from the pool."""
    import pyarrow as pa

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "warm.parquet"
        pq.write_table(pa.table({"seq_id": pa.array([1], pa.uint64())}), path)
        pq.ParquetFile(path).read_row_groups([0], columns=["seq_id"]).column(0).to_numpy()
        pq.read_table(path, columns=["seq_id"])


def run_rank(spec: dict) -> dict:
    """One rank: plan the slice, then every local batch of the run, measured."""
    paths = list_shards(spec["pool"])
    warm_up()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    world, rank, batch = spec["world"], spec["rank"], spec["batch_size"]
    read_before, started = rchar(), time.perf_counter()
    if spec["sampling"] == "blocks":
        data = BlockData(paths, spec["budget"], 0, spec["buffer_rows"])
    else:
        index = select_token_budget(paths, spec["budget"], 0)
        data = IndexedData(index, np.arange(len(index)))
    steps = data.usable_chunks(batch, world) // batch
    batches = data.rank_batches(steps, batch, rank, world)
    chunks = tokens = 0
    for step in range(steps):
        input_ids, n_tokens = batches.local_batch(step, spec["seq_len"], 0)
        chunks, tokens = chunks + len(n_tokens), tokens + int(n_tokens.sum())
    seconds = time.perf_counter() - started
    read = rchar() - read_before
    return {
        "rank": rank,
        "bytes_read": read,
        "token_bytes_touched": token_bytes_touched(data, batches, rank, world, steps, batch),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "baseline_rss_mb": round(baseline / 1024, 1),
        "seconds": round(seconds, 2),
        "steps": steps,
        "chunks_trained": chunks,
        "tokens_trained": tokens,
        "slice_chunks": data.n_chunks(world),
        "max_rows_held": getattr(batches, "max_rows_held", len(getattr(batches, "tokens", []))),
    }


def measure(spec: dict) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(output.stdout)


def summarize(ranks: list[dict], seq_len: int, per_rank: bool) -> dict:
    keys = ("bytes_read", "token_bytes_touched", "peak_rss_mb", "seconds")
    out = {f"{k}_per_rank_max": max(r[k] for r in ranks) for k in keys}
    out["bytes_read_all_ranks"] = sum(r["bytes_read"] for r in ranks)
    out["steps"] = ranks[0]["steps"]
    out["slice_chunks"] = ranks[0]["slice_chunks"]
    out["slice_token_bytes_int32"] = ranks[0]["slice_chunks"] * seq_len * 4
    out["chunks_trained"] = sum(r["chunks_trained"] for r in ranks)
    out["max_rows_held_per_rank"] = max(r["max_rows_held"] for r in ranks)
    out["baseline_rss_mb"] = max(r["baseline_rss_mb"] for r in ranks)
    out["rss_over_baseline_mb_per_rank_max"] = round(
        max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in ranks), 1
    )
    if per_rank:
        out["ranks"] = ranks
    return out


def ranks_to_measure(sampling: str, world: int, all_ranks: bool) -> list[int]:
    """Every rank of a blocks run (disjoint shares); the first, middle and last of a chunks run,
    whose ranks all read the pool's whole token column (unless --all-ranks): the bench's time
    is mostly those full reads."""
    if all_ranks or sampling == "blocks" or world <= 3:
        return list(range(world))
    return [0, world // 2, world - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--files", type=int, default=8, help="synthetic input files")
    parser.add_argument("--rows-per-shard", type=int, default=65536)
    parser.add_argument("--row-group-rows", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--keep", default="0.018,0.1", help="keep fractions of the pool")
    parser.add_argument("--worlds", default="1,8")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--buffer-rows", type=int, default=65536)
    parser.add_argument("--per-rank", action="store_true", help="list every rank's numbers")
    parser.add_argument("--all-ranks", action="store_true", help="measure every chunks rank too")
    parser.add_argument("--dir", help="where to build the pool (default: a temp dir)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_rank(json.loads(args.worker))))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        pool = Path(tmp) / "pool"
        started = time.perf_counter()
        build_pool(pool, args.rows, args.seq_len, args)
        paths = list_shards(pool)
        total_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
        report = {
            "pool": {
                "rows": total_rows,
                "seq_len": args.seq_len,
                "shards": len(paths),
                "row_group_rows": args.row_group_rows,
                "bytes_on_disk": sum(p.stat().st_size for p in paths),
                "build_seconds": round(time.perf_counter() - started, 1),
            },
            "batch_size": args.batch_size,
            "buffer_rows": args.buffer_rows,
            "runs": [],
        }
        for keep in map(float, args.keep.split(",")):
            budget = int(keep * total_rows * args.seq_len)
            for sampling in ("chunks", "blocks"):
                for world in map(int, args.worlds.split(",")):
                    spec = {"pool": str(pool), "sampling": sampling, "budget": budget,
                            "world": world, "batch_size": args.batch_size,
                            "buffer_rows": args.buffer_rows, "seq_len": args.seq_len}  # fmt: skip
                    measured = ranks_to_measure(sampling, world, args.all_ranks)
                    ranks = [measure({**spec, "rank": r}) for r in measured]
                    run = {"keep_fraction": keep, "sampling": sampling, "world_size": world}
                    summary = summarize(ranks, args.seq_len, args.per_rank)
                    summary["ranks_measured"] = measured
                    if len(measured) < world:  # chunks: every rank reads the same whole column
                        summary["bytes_read_all_ranks"] = round(
                            summary["bytes_read_all_ranks"] / len(measured) * world
                        )
                    report["runs"].append({**run, **summary})
                    print(json.dumps(run | {"seconds": sum(r["seconds"] for r in ranks)}),
                          file=sys.stderr)  # fmt: skip
        report["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
