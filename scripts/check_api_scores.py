"""Check `Scorer.score_ids` against the score stage on every pool chunk of a finished run.

Each pool token shard goes through `colorfilter.load_scorer(run).score_ids` (the run's batch
size, device and precision); its numbers are compared with the score shard of the same name,
row by row (same seq_ids). Prints JSON: chunks, tokens, max |delta| per column, seconds.

  python scripts/check_api_scores.py --run-dir outputs/demo --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

COLUMNS = ("prior_loss", "cond_loss", "score")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="outputs/demo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args(argv)

    import colorfilter as cf
    from colorfilter.io.token_shards import list_shards, pad_input_ids

    run = Path(args.run_dir)
    scorer = cf.load_scorer(run, torch_threads=args.threads)
    worst = dict.fromkeys(COLUMNS, 0.0)
    chunks = tokens = 0
    start = time.perf_counter()
    for token_path in list_shards(run / "tokens" / "pool"):
        table = pq.read_table(token_path, columns=["seq_id", "input_ids"])
        stage = pq.read_table(run / "scores" / "pool" / token_path.name)
        if not np.array_equal(table.column("seq_id"), stage.column("seq_id")):
            raise SystemExit(f"{token_path.name}: score shard rows are not the token shard's")
        ids, n_tokens = pad_input_ids(table.column("input_ids"), scorer.seq_len,
                                      scorer.settings.pad_id)  # fmt: skip
        ours = scorer.score_ids(ids, n_tokens)
        for name in COLUMNS:
            mine, theirs = getattr(ours, name), stage.column(name).to_numpy()
            if not np.array_equal(np.isnan(mine), np.isnan(theirs)):
                raise SystemExit(f"{token_path.name}: {name} is NaN on different chunks")
            delta = np.abs(mine - theirs)
            worst[name] = max(worst[name], float(np.nanmax(delta)) if delta.size else 0.0)
        chunks += table.num_rows
        tokens += int(n_tokens.sum())
        print(f"{token_path.name}: {table.num_rows} chunks, max |delta| so far {worst}",
              file=sys.stderr, flush=True)  # fmt: skip
    seconds = time.perf_counter() - start
    report = {
        "run_dir": str(run), "chunks": chunks, "tokens": tokens,
        "precision": scorer.precision.name, "batch_size": scorer.batch_size,
        "max_abs_delta": worst, "within_tolerance": max(worst.values()) <= args.tolerance,
        "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds, 1),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
