"""Held-out loss of target models trained on one source group of the pool at a time, as JSON.

Why: the evaluation's ceiling. If a target trained only on the pool's most target-like source
is barely better than what the selection methods reach, held-out loss cannot separate those
methods at this scale, whatever they select. Uses the run's `evaluate` settings (preset, lr,
batch size, tokens per run), so its numbers compare with `eval/report.md`.

  python scripts/eval_by_source.py configs/demo.yaml \
      book:sensesensibility,book:mansfieldpark,book:northangerabbey book:kjv jargon debian
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def train_on_sources(config, groups: list[list[str]], n_chunks: int, seed: int) -> list[dict]:
    """One fresh target per group of `source` prefixes, on `n_chunks` of that group's chunks."""
    from colorfilter.evaluation.plan import repeated_order
    from colorfilter.evaluation.pool import has_labels
    from colorfilter.evaluation.train import train_and_evaluate
    from colorfilter.io.token_shards import list_shards
    from colorfilter.pipeline.evaluate import target_setup

    paths = list_shards(config.output_path / "tokens" / "pool")
    if not has_labels(paths):
        raise SystemExit("the pool's token shards record no `source` (set data.source_field)")
    setup = target_setup(config)
    results = []
    for prefixes in groups:
        index = full_chunks_of(paths, prefixes, config.seq_len)
        order = repeated_order(index, n_chunks, seed)
        name = ",".join(prefixes)
        result = train_and_evaluate(index, order, config.evaluate, setup, seed, name)
        results.append({"sources": prefixes, "full_chunks": len(index), **result})
    return results


def full_chunks_of(paths, prefixes: list[str], seq_len: int):
    """The pool's full-length chunks whose `source` starts with one of `prefixes` (a missing
    label reads "None"), streamed shard by shard into a ChunkIndex."""
    import numpy as np

    from colorfilter.evaluation.pool import Labels, is_target, iter_shards
    from colorfilter.models.data import ChunkIndex

    labels = Labels()
    parts = []
    for rows in iter_shards(paths, labels):
        wanted = is_target(labels.labels(none="None"), prefixes)[rows.codes]
        at = np.flatnonzero(wanted & (rows.n_tokens == seq_len))
        parts.append((np.full(len(at), rows.number, np.int32), at, rows.seq_id[at],
                      rows.n_tokens[at]))  # fmt: skip
    columns = [np.concatenate(column) for column in zip(*parts)]
    return ChunkIndex(list(paths), *columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("groups", nargs="+", help="comma-separated `source` prefixes per run")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=0, help="0: evaluate.train_tokens/seq_len")
    args = parser.parse_args()
    from colorfilter.config import load_config

    config = load_config(args.config, args.overrides)
    n_chunks = args.chunks or config.evaluate.train_tokens // config.seq_len
    if n_chunks < config.evaluate.batch_size:
        raise SystemExit("set --chunks (or evaluate.train_tokens) to at least one batch")
    groups = [group.split(",") for group in args.groups]
    results = train_on_sources(config, groups, n_chunks, args.seed)
    print(json.dumps({"chunks_per_run": n_chunks, "seed": args.seed, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
