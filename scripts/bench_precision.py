"""Scoring precision benchmark: each score.precision against fp32, on real trained models (JSON).

For each precision: mean and max |score difference| against fp32 (score = prior_loss -
cond_loss), next to fp32's score spread; the overlap of its top-1/tau set with fp32's (the
selection CoLoR-Filter keeps); and pair tokens/s (sequence tokens through both models).

  # the demo's models and pool (after `colorfilter run configs/demo.yaml`, ~15 min on 2 cores)
  python scripts/bench_precision.py --run-dir outputs/demo --max-rows 2048
  # any pair and any token shards (rows padded to --seq-len, default the longest chunk read)
  python scripts/bench_precision.py --prior P --conditional C --tokens DIR

  # 135M: SmolLM2-135M as the prior, the conditional = it fine-tuned 30 steps (8 x 256) on the
  # demo's target, the demo pool tokenized with its 49k tokenizer at seq_len 256 (~20 min)
  python scripts/convert_smollm2.py --out models/smollm2-135m    # see its docstring
  colorfilter run configs/demo.yaml --stages prepare,train-prior,train-conditional \
    --set output_dir=outputs/smollm2 --set seq_len=256 --set tokenizer=models/smollm2-135m \
    --set prior.init_from=models/smollm2-135m --set prior.eval_max_chunks=32 \
    --set conditional.max_steps=30 --set conditional.batch_size=8 \
    --set conditional.warmup_steps=5 --set conditional.eval_max_chunks=32
  python scripts/bench_precision.py --run-dir outputs/smollm2 --max-rows 160 --batch-size 16 \
    --threads 2

The device is the CPU unless --device cuda. On CPU, bf16 uses AMX/AVX-512 bf16 where present.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_PRECISIONS = "fp32,bf16,fp32-autocast-bf16"


def load_rows(token_dir: Path, max_rows: int, seq_len: int, pad_id: int) -> tuple:
    """(seq_ids, padded ids [N, seq_len], n_tokens) of the first max_rows chunks in name order;
    seq_len 0 pads to the longest of them (the run's seq_len, which prepare cut them at)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from colorfilter.io.token_shards import list_shards, pad_input_ids

    tables, rows = [], 0
    for path in list_shards(token_dir):
        table = pq.read_table(path, columns=["seq_id", "input_ids"])
        tables.append(table.slice(0, max_rows - rows) if max_rows else table)
        rows += tables[-1].num_rows
        if max_rows and rows >= max_rows:
            break
    table = pa.concat_tables(tables)
    if not seq_len:
        seq_len = int(pc.max(pc.list_value_length(table.column("input_ids"))).as_py())
    ids, n_tokens = pad_input_ids(table.column("input_ids"), seq_len, pad_id)
    return table.column("seq_id").to_numpy(), ids, n_tokens


def score_all(prior: Path, cond: Path, precision: str, rows: tuple, args) -> dict:
    """Score every row at `precision`; (scores, tokens/s) after one warm-up batch."""
    from colorfilter.scoring.config import ScoreConfig
    from colorfilter.scoring.torch_backend import TorchPairScorer

    cfg = ScoreConfig(precision=precision, batch_size=args.batch_size, torch_threads=args.threads)
    scorer = TorchPairScorer(prior, cond, cfg, device=args.device)
    _, ids, n_tokens = rows
    b = args.batch_size
    scorer.score(ids[:b], n_tokens[:b])  # warm-up (allocator, AMX kernels)
    parts, start = [], time.perf_counter()
    for i in range(0, len(ids), b):
        parts.append(scorer.score(ids[i : i + b], n_tokens[i : i + b]))
    seconds = time.perf_counter() - start
    prior_loss = np.concatenate([p for p, _ in parts]).astype(np.float64)
    cond_loss = np.concatenate([c for _, c in parts]).astype(np.float64)
    ran = scorer.precision.as_dict()
    scorer.close()
    return {
        "prior_loss": prior_loss,
        "score": prior_loss - cond_loss,
        "ran": ran,
        "tokens_per_s": round(float(n_tokens.sum()) / seconds, 1),
        "seconds": round(seconds, 2),
    }


def top_set(score: np.ndarray, seq_ids: np.ndarray, tau: float) -> set:
    """seq_ids of the top len/tau scores (NaN last, ties by seq_id), as the selection does."""
    k = max(1, int(len(score) / tau))
    key = np.where(np.isnan(score), -np.inf, score)
    order = np.lexsort((seq_ids, -key))
    return set(seq_ids[order[:k]].tolist())


def compare(reference: dict, other: dict, seq_ids: np.ndarray, taus: list[float]) -> dict:
    valid = ~np.isnan(reference["score"]) & ~np.isnan(other["score"])
    diff = np.abs(other["score"] - reference["score"])[valid]
    prior_diff = np.abs(other["prior_loss"] - reference["prior_loss"])[valid]
    result = {
        "ran": other["ran"],
        "tokens_per_s": other["tokens_per_s"],
        "speedup_vs_fp32": round(other["tokens_per_s"] / reference["tokens_per_s"], 2),
        "mean_abs_score_diff": float(diff.mean()),
        "max_abs_score_diff": float(diff.max()),
        "mean_abs_prior_loss_diff": float(prior_diff.mean()),
        "rank_corr_vs_fp32": spearman(reference["score"][valid], other["score"][valid]),
    }
    for tau in taus:
        want, got = top_set(reference["score"], seq_ids, tau), top_set(other["score"], seq_ids, tau)
        result[f"top_1/{tau:g}_overlap"] = round(len(want & got) / len(want), 4)
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x, kind="stable"), kind="stable") for x in (a, b)]
    return round(float(np.corrcoef(*ranks)[0, 1]), 6)


def run(args: argparse.Namespace) -> dict:
    import torch

    from colorfilter.models.checkpoints import load_tokenizer

    if args.run_dir:
        run_dir = Path(args.run_dir)
        prior, cond = run_dir / "models" / "prior", run_dir / "models" / "conditional"
        tokens, tokenizer_dir = run_dir / "tokens" / "pool", run_dir / "tokenizer"
    else:
        prior, cond, tokens = Path(args.prior), Path(args.conditional), Path(args.tokens)
        tokenizer_dir = Path(args.tokenizer or args.prior)
    pad_id = args.pad_id if args.pad_id >= 0 else load_tokenizer(tokenizer_dir)[1]
    rows = load_rows(tokens, args.max_rows, args.seq_len, pad_id)
    seq_len = int(rows[1].shape[1])
    taus = [float(t) for t in args.tau.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {p: score_all(prior, cond, p, rows, args) for p in args.precisions.split(",")}
    reference = results["fp32"]
    fp32_score = reference["score"][~np.isnan(reference["score"])]
    return {
        "prior": str(prior),
        "conditional": str(cond),
        "tokens": str(tokens),
        "parameters": count_parameters(prior),
        "rows": int(len(rows[0])),
        "seq_len": seq_len,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "fp32": {
            "tokens_per_s": reference["tokens_per_s"],
            "score_std": float(fp32_score.std()),
            "score_range": [float(fp32_score.min()), float(fp32_score.max())],
        },
        "vs_fp32": {
            name: compare(reference, result, rows[0], taus)
            for name, result in results.items()
            if name != "fp32"
        },
    }


def count_parameters(model_dir: Path) -> int:
    """Parameters in the checkpoint's safetensors files (read from their headers only)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), "np") as handle:
            total += sum(int(np.prod(handle.get_slice(k).get_shape())) for k in handle.keys())
    return total


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", help="a finished run: models/, tokens/pool, tokenizer/")
    parser.add_argument("--prior")
    parser.add_argument("--conditional")
    parser.add_argument("--tokens", help="a folder of token shards")
    parser.add_argument("--tokenizer", help="default: the prior's folder")
    parser.add_argument("--pad-id", type=int, default=-1, help="instead of the tokenizer's")
    parser.add_argument("--seq-len", type=int, default=0, help="0: the longest chunk read")
    parser.add_argument("--max-rows", type=int, default=2048, help="0: every chunk")
    parser.add_argument("--precisions", default=DEFAULT_PRECISIONS, help="fp32 must be one")
    parser.add_argument("--tau", default="16,4")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: default")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not args.run_dir and not (args.prior and args.conditional and args.tokens):
        parser.error("give --run-dir, or --prior, --conditional and --tokens")
    if "fp32" not in args.precisions.split(","):
        parser.error("--precisions must include fp32 (the reference)")
    return args


def main() -> None:
    print(json.dumps(run(parse_args()), indent=2))


if __name__ == "__main__":
    main()
