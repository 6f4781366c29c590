"""The one GPU check: every GPU path of the project on one H100/H200 in <= 8 minutes, one JSON.

Steps (each a subprocess with its own time limit, all within --budget-s):
  score      scripts/bench_score_gpu.py: the olmo-150m pair at seq 512, eager sweep + compiled,
             tokens/s and MFU against the naive per-sequence loop (goal: MFU >= 0.55)
  train      scripts/bench_train_gpu.py --compile: olmo-150m training tokens/s and MFU, with the
             memory plan's micro-batch and its planned peak next to the measured one
  precision  a 150M prior and conditional trained through the real stages on the bundled
             sample (seq 512, GPU), then scripts/bench_precision.py: bf16 and fp32-autocast-bf16
             against fp32 (score differences, top-1/tau agreement, tokens/s); the stages' own
             planned and measured peak memory come along
  ddp        scripts/gpu_ddp_smoke.py: one NCCL rank through DDP then torch.compile
  tests      pytest -m gpu
Without a visible CUDA GPU it stops at once: {"ok": false, "error": ...}, exit code 2.

  bash scripts/gpu_check.sh            # from the repository root, the project installed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMITS_S = {  # seconds per step; they add up to the 480 s budget
    "score": 120, "train": 90, "precision_train": 110, "precision": 40, "ddp": 50, "tests": 70,
}  # fmt: skip


def preflight() -> str | None:
    """None if a CUDA GPU is usable from torch, else why not."""
    code = "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; " \
        "print(torch.cuda.get_device_name(0))"  # fmt: skip
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return "importing torch / initialising CUDA took over 60 s"
    if done.returncode:
        return (done.stderr.strip().splitlines() or ["torch failed"])[-1]
    return None


def run_step(name: str, command: list[str], limit_s: float, deadline: float) -> dict:
    """Run one step; its JSON (the last JSON object it prints) or why it failed."""
    limit = max(5.0, min(limit_s, deadline - time.monotonic()))
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=limit, env=env
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"{name}: over its {limit:.0f} s limit"}
    result: dict = {"seconds": round(time.monotonic() - started, 1), "exit_code": done.returncode}
    parsed = last_json(done.stdout)
    if parsed is not None:
        result["report"] = parsed
    if done.returncode or parsed is None:
        result["stderr_tail"] = done.stderr[-1500:]
    result["ok"] = done.returncode == 0
    return result


def last_json(text: str) -> object | None:
    """The JSON document a script printed (whole stdout, or its last `{...}` block)."""
    text = text.strip()
    for start in [0, *[i for i, ch in enumerate(text) if ch in "{["][::-1]]:
        try:
            return json.loads(text[start:])
        except ValueError:
            continue
    return None


def precision_steps(work: Path) -> list[tuple[str, list[str]]]:
    """Train a 150M pair on the bundled sample on the GPU, then compare precisions on it."""
    run_dir = work / "p150"
    sets = [
        f"output_dir={run_dir}", "seq_len=512", "device=cuda", "executor=local",
        "prior.preset=olmo-150m", "prior.token_budget=0", "prior.batch_size=32",
        "prior.max_steps=120", "prior.eval_max_chunks=64", "prior.progress=false",
        "conditional.batch_size=16", "conditional.max_steps=30", "conditional.eval_max_chunks=64",
        "conditional.progress=false", "prepare.num_workers=4",
    ]  # fmt: skip
    train = [sys.executable, "-m", "colorfilter", "run", "configs/demo.yaml",
             "--stages", "prepare,train-prior,train-conditional"]  # fmt: skip
    for item in sets:
        train += ["--set", item]
    bench = [sys.executable, "scripts/bench_precision.py", "--run-dir", str(run_dir),
             "--device", "cuda", "--max-rows", "0", "--batch-size", "128"]  # fmt: skip
    return [("precision_train", train), ("precision", bench)]


def train_stats(work: Path) -> dict:
    keep = ("steps", "micro_batch_size", "accumulation_steps", "planned_peak_gb",
            "cuda_peak_allocated_gb", "train_tokens_per_s", "eval_loss", "dtype")  # fmt: skip
    stats = {}
    for stage in ("prior", "conditional"):
        path = work / "p150" / "models" / stage / "train_stats.json"
        if path.exists():
            data = json.loads(path.read_text())
            stats[stage] = {k: data.get(k) for k in keep}
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--skip", default="", help="comma-separated steps to leave out")
    args = parser.parse_args()
    started = time.monotonic()
    deadline = started + args.budget_s
    problem = preflight()
    if problem is not None:
        print(json.dumps({"ok": False, "error": f"no usable CUDA GPU: {problem}"}))
        return 2
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    py = sys.executable
    steps = [
        ("score", [py, "scripts/bench_score_gpu.py", "--batch-sizes", "128,256",
                   "--seconds", "5", "--shard-batches", "20"]),
        ("train", [py, "scripts/bench_train_gpu.py", "--compile", "--steps", "10",
                   "--max-seconds", "30"]),
        *precision_steps(work),
        ("ddp", [py, "scripts/gpu_ddp_smoke.py"]),
        ("tests", [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]),
    ]  # fmt: skip
    skipped = set(filter(None, args.skip.split(",")))
    report: dict = {}
    for name, command in steps:
        if name.split("_")[0] in skipped:
            continue
        limit = LIMITS_S.get(name, 100)
        report[name] = run_step(name, command, limit, deadline)
    report["precision_train_stats"] = train_stats(work)
    report["summary"] = summary(report)
    report["ok"] = all(v.get("ok") for k, v in report.items() if isinstance(v, dict) and "ok" in v)
    report["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def summary(report: dict) -> dict:
    """The headline numbers, where their steps produced them."""
    out: dict = {}
    score = (report.get("score") or {}).get("report") or {}
    compiled = score.get("compiled") or {}
    out["score_pair_tokens_per_s"] = compiled.get("tokens_per_s")
    out["score_mfu"] = compiled.get("mfu")
    out["score_mfu_goal_0.55_met"] = (compiled.get("mfu") or 0) >= 0.55 if compiled else None
    out["score_vs_naive"] = score.get("best_vs_naive")
    train = (report.get("train") or {}).get("report") or {}
    for key in ("tokens_per_s", "mfu", "micro_batch_size", "planned_peak_gib", "peak_memory_gib"):
        out[f"train_{key}"] = train.get(key)
    precision = (report.get("precision") or {}).get("report") or {}
    for name, row in (precision.get("vs_fp32") or {}).items():
        out[f"{name}_top16_overlap"] = row.get("top_1/16_overlap")
    return out


if __name__ == "__main__":
    sys.exit(main())
