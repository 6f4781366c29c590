"""Integrations benchmark: tokens/s of the score stage's own path, the datatrove step and the Ray
Data scorer on the same pool chunks of a finished run, as JSON on stdout.

The work: the first `--chunks` pool chunks of the run's first input file (seq_id order) and the
documents they come from (prepare cut them from that file's documents joined with EOS).
  stage      ScoreWorker (the score stage's actor body) scoring a token shard of those chunks:
             parquet read + pad in a prefetch thread, both models, score shard + record written
  datatrove  JsonlReader over those documents -> ColorFilterScoreFilter (annotate-only) ->
             JsonlWriter in a LocalPipelineExecutor (1 task): each document tokenized and chunked
             on its own, so the chunks are not the same cut, but the text is
  ray        Ray Data: from_arrow(seq_id, input_ids of the same chunks) -> map_batches(
             ColorFilterBatchScorer, one actor): the same chunks, the same numbers as the stage
All three use the run's batch size, precision and device, and the threads of one score actor of
the run (`score.torch_threads`, else `score.worker_cpus`; `--threads` to change), one worker
each; models are loaded before the clock starts (the Ray actor's rates run from its first
batch's start to its last batch's end; its wall time with actor start is reported beside it).
Rates are real tokens scored (padding excluded) per wall second and per CPU second of the
scoring process (the latter moves less when other jobs share the machine). Paths run
interleaved `--repeats` times; the ratios compare medians.

  python scripts/bench_integrations.py --run-dir outputs/demo --chunks 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorfilter.integrations.ray_data import ColorFilterBatchScorer


def first_chunks(run_dir: Path, count: int) -> pa.Table:
    """The first `count` chunks of the run's first input file, in seq_id order."""
    from colorfilter.io.token_shards import list_shards

    shards = [p for p in list_shards(run_dir / "tokens" / "pool") if p.name.startswith("00000-")]
    table = pq.read_table(shards).sort_by("seq_id")
    return table.slice(0, min(count, table.num_rows))


def source_documents(run_dir: Path, chunks: pa.Table) -> list[str]:
    """The texts of the documents the chunks cover (documents 0..last of the first file)."""
    from colorfilter.io.readers import Document, iter_jsonl

    source = Path(chunks.column("source_file")[0].as_py())
    if not source.is_absolute() and not source.exists():
        source = run_dir.resolve().parent.parent / source  # relative to where the run ran
    last = int(chunks.column("doc_last").to_numpy().max())
    texts = []
    for record in iter_jsonl(str(source), "text", None):
        if record.index > last:
            break
        if isinstance(record, Document):
            texts.append(record.text)
    return texts


def bench_stage(run_dir: Path, chunks: pa.Table, work: Path, threads: int) -> tuple:
    """A ScoreWorker built as the score stage builds it; returns (runner, settings)."""
    from dataclasses import replace

    from colorfilter.layout import RunLayout
    from colorfilter.pipeline.score import ScoreSetup, ScoreTask, ScoreWorker, check_vocabularies
    from colorfilter.scorer import saved_config
    from colorfilter.scoring.shard import ShardScoring

    config = saved_config(str(run_dir))
    run = RunLayout.of(config)
    prior, cond = run.model("prior"), run.model("conditional")
    pad = check_vocabularies(run.tokenizer, prior, cond)
    cfg = replace(config.score, torch_threads=threads)
    device = "cpu" if config.device == "auto" else config.device
    shard = ShardScoring(cfg.batch_size, config.seq_len, pad, cfg.prefetch_batches, "bench")
    worker = ScoreWorker(ScoreSetup(prior, cond, cfg, device, shard))
    pq.write_table(chunks, work / "tokens.parquet")

    def run_once(index: int) -> dict:
        task = ScoreTask(str(work / "tokens.parquet"), str(work / f"scores-{index}.parquet"))
        start, cpu = time.perf_counter(), time.process_time()
        stats = worker(task)
        return rate(stats["tokens"], time.perf_counter() - start, time.process_time() - cpu)

    return run_once, {"batch_size": cfg.batch_size, "precision": worker.scorer.precision.name}


def bench_datatrove(run_dir: Path, texts: list[str], work: Path, threads: int):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from colorfilter.integrations.datatrove import ColorFilterScoreFilter

    (work / "docs").mkdir()
    with open(work / "docs" / "docs.jsonl", "w") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"text": text, "id": str(i)}) + "\n")
    options = {"torch_threads": threads}
    ColorFilterScoreFilter(str(run_dir), scorer_options=options).scorer()  # load, then time

    def run_once(index: int) -> dict:
        step = ColorFilterScoreFilter(str(run_dir), scorer_options=options)
        executor = LocalPipelineExecutor(
            pipeline=[JsonlReader(str(work / "docs")), step,
                      JsonlWriter(str(work / f"dt-out-{index}"))],
            tasks=1, workers=1, logging_dir=str(work / f"dt-logs-{index}"),
        )  # fmt: skip
        start, cpu = time.perf_counter(), time.process_time()
        executor.run()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        return rate(_datatrove_tokens(work / f"dt-out-{index}"), elapsed, cpu)

    return run_once


def _datatrove_tokens(folder: Path) -> int:
    import gzip

    total = 0
    for path in folder.glob("*.gz"):
        with gzip.open(path, "rt") as handle:
            total += sum(json.loads(line)["metadata"]["colorfilter_n_tokens"] for line in handle)
    return total


class TimedBatchScorer(ColorFilterBatchScorer):
    """The Ray Data scorer, with each batch's start and end (wall and actor CPU) as columns."""

    def __call__(self, batch):
        start, cpu = time.time(), time.process_time()
        out = super().__call__(batch)
        n = len(out["score"])
        out["_start"], out["_end"] = np.full(n, start), np.full(n, time.time())
        out["_cpu0"], out["_cpu1"] = np.full(n, cpu), np.full(n, time.process_time())
        return out


def bench_ray(run_dir: Path, chunks: pa.Table, threads: int, batch_size: int):
    import ray

    table = chunks.select(["seq_id", "input_ids", "n_tokens"])

    def run_once(index: int) -> dict:
        # a Ray driver only while this path runs: its threads would take CPU from the others
        ray.init(address="local", num_cpus=threads + 1, object_store_memory=300 << 20,
                 include_dashboard=False, log_to_driver=False)  # fmt: skip
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_arrow(table).map_batches(
            TimedBatchScorer, fn_constructor_kwargs={"run": str(run_dir), "torch_threads": threads},
            compute=ray.data.ActorPoolStrategy(size=1), num_cpus=threads, batch_size=batch_size,
        )  # fmt: skip
        start = time.perf_counter()
        rows = ds.to_pandas()
        wall = time.perf_counter() - start
        tokens = int(rows["n_tokens"].sum())
        ray.shutdown()
        window = rows["_end"].max() - rows["_start"].min()
        cpu = rows["_cpu1"].max() - rows["_cpu0"].min()  # one actor: one process
        return {**rate(tokens, window, cpu), "wall_with_actor_start_s": round(wall, 2)}

    return run_once


def rate(tokens: int, seconds: float, cpu_seconds: float) -> dict:
    """Tokens per wall second, and per CPU second of the scoring process (less sensitive to
    other jobs on a shared machine than wall time)."""
    return {"tokens": int(tokens), "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1),
            "tokens_per_cpu_s": round(tokens / cpu_seconds, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="outputs/demo")
    parser.add_argument("--chunks", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per path (0: the run's per-worker score threads)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default="stage,datatrove,ray")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not args.threads:  # what each score actor of this run used
        from colorfilter.scorer import saved_config

        score = saved_config(str(run_dir)).score
        args.threads = score.torch_threads or max(1, int(score.worker_cpus))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # as the stage sets it for its actors
    import torch

    torch.set_num_threads(args.threads)
    chunks = first_chunks(run_dir, args.chunks)
    texts = source_documents(run_dir, chunks)
    paths = args.paths.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-integrations-") as tmp:
        work = Path(tmp)
        stage, settings = bench_stage(run_dir, chunks, work, args.threads)
        runners = {"stage": stage}
        if "datatrove" in paths:
            runners["datatrove"] = bench_datatrove(run_dir, texts, work, args.threads)
        if "ray" in paths:
            runners["ray"] = bench_ray(run_dir, chunks, args.threads, settings["batch_size"])
        runs: dict[str, list[dict]] = {name: [] for name in runners}
        for index in range(args.repeats):
            for name, runner in runners.items():
                runs[name].append(runner(index))
                print(f"{name} #{index}: {runs[name][-1]}", file=sys.stderr, flush=True)
    report = {
        "run_dir": str(run_dir), "chunks": chunks.num_rows, "documents": len(texts),
        "threads": args.threads, "cpus": os.cpu_count(), **settings, "runs": runs,
    }  # fmt: skip
    for key in ("tokens_per_s", "tokens_per_cpu_s"):
        medians = {n: statistics.median(r[key] for r in rs) for n, rs in runs.items()}
        report[f"median_{key}"] = medians
        report[f"ratios_vs_stage_{key}"] = {
            n: round(medians[n] / medians["stage"], 3) for n in medians if n != "stage"
        }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
