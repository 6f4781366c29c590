"""What verifying checkpoints and model folders by sha256 costs, at the paper's 150M size on CPU;
prints JSON.

Builds the `olmo-150m` prior (vocab 50,280, padded to 50,304), takes one real AdamW step so the
optimizer holds its full state (two fp32 moments per parameter), then, `--repeat` times each:

- `save_s`: `models.resume.save_checkpoint`, the unit a training run writes (torch.save through a
  hashing writer, temp-then-rename, the record with size and sha256, then the previous step's
  checkpoint removed); `plain_save_s`: a bare `torch.save` to a temp file renamed over the
  previous one, with a size-only record (what earlier versions wrote), the baseline;
- `verify_s`: the sha256 of the checkpoint's file, the check a resume adds before loading;
  `load_s`: `torch.load` of it, which a resume does anyway;
- `model_commit_s` / `model_verify_s`: the finished model folder (`save_pretrained` files)
  committed with sha256, and `models.checkpoints.verified_model` on it (what score, the Python
  API and the conditional run before loading a model).

Medians are reported. Files are read back right after they were written, so the reads mostly
hit the page cache: a cold resume reads at the disk's speed instead. The machine may be shared:
compare the ratios, not the seconds, across machines.

Usage: python scripts/bench_checkpoint.py [--preset olmo-150m] [--repeat 3] [--threads 2]
       [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

VOCAB = 50280  # GPT-NeoX-20B, the paper's tokenizer


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def build(preset: str, threads: int):
    """The model and an AdamW whose state is filled by one real step."""
    import torch

    from colorfilter.models.config import PriorConfig
    from colorfilter.models.presets import build_model, count_parameters
    from colorfilter.models.training import build_optimizer

    torch.set_num_threads(threads)
    model = build_model(preset, VOCAB, 512, seed=0)
    optimizer = build_optimizer(model, PriorConfig(), torch.device("cpu"))
    ids = torch.randint(1, VOCAB, (1, 32), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer, count_parameters(model)


def plain_save(folder: Path, model, optimizer, state) -> None:
    """The earlier versions' checkpoint: torch.save, rename, then a size-only record."""
    import torch

    from colorfilter.io.atomic import atomic_path
    from colorfilter.io.commit import commit_unit

    path = folder / "state.pt"
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "state": state.__dict__}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    commit_unit(folder / "state.done.json", [path], {"step": state.step})


def bench(args: argparse.Namespace) -> dict:
    import torch

    from colorfilter.io.storage import file_sha256
    from colorfilter.models.checkpoints import commit_model_files, verified_model
    from colorfilter.models.resume import CHECKPOINT_FILE, TrainState, save_checkpoint

    model, optimizer, params = build(args.preset, args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-checkpoint-", dir=args.dir))
    times: dict[str, list[float]] = {k: [] for k in (
        "save_s", "plain_save_s", "verify_s", "load_s", "model_commit_s", "model_verify_s")}
    sizes: dict[str, int] = {}
    try:
        model_dir = root / "model"
        model.save_pretrained(model_dir)
        for repeat in range(args.repeat):
            state = TrainState(step=repeat + 1)
            folder = root / "checkpoint"
            times["save_s"].append(timed(partial(save_checkpoint, folder, model, optimizer,
                                                 state, "bench")))  # fmt: skip
            unit = folder / f"step-{state.step:08d}"
            state_file = unit / CHECKPOINT_FILE
            times["verify_s"].append(timed(partial(file_sha256, str(state_file))))
            times["load_s"].append(timed(partial(torch.load, state_file, map_location="cpu",
                                                 weights_only=False)))  # fmt: skip
            sizes = {"state_pt_bytes": state_file.stat().st_size,
                     "record_bytes": (unit / "state.done.json").stat().st_size}  # fmt: skip
            plain = root / "plain"  # kept: each save replaces the last, as earlier versions
            plain.mkdir(exist_ok=True)
            times["plain_save_s"].append(timed(partial(plain_save, plain, model, optimizer,
                                                       state)))  # fmt: skip
            times["model_commit_s"].append(timed(partial(commit_model_files, str(model_dir))))
            times["model_verify_s"].append(timed(partial(verified_model, str(model_dir),
                                                         "train-prior")))  # fmt: skip
        sizes["model_folder_bytes"] = sum(p.stat().st_size for p in model_dir.iterdir())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    median = {name: round(statistics.median(values), 3) for name, values in times.items()}
    return {
        "preset": args.preset,
        "parameters": params,
        "torch_threads": args.threads,
        "repeat": args.repeat,
        **median,
        "save_overhead_ratio": round(median["save_s"] / median["plain_save_s"], 3),
        "verify_vs_load_ratio": round(median["verify_s"] / median["load_s"], 3),
        "verify_gb_per_s": round(sizes["state_pt_bytes"] / median["verify_s"] / 1e9, 3),
        **sizes,
        "all_s": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="olmo-150m")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", default=None, help="where to write (default: the temp dir)")
    print(json.dumps(bench(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
