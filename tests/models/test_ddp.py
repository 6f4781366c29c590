"""Data-parallel prior training under torchrun (2 CPU ranks, gloo) against one process.

The documented semantics (models/config.py, models/training.py): `batch_size` is the *global*
batch, split across ranks (rank r takes rows r, r + world_size, ... of each step's batch), and
the loss is a token-weighted mean over the whole global batch. So two ranks must train on
disjoint halves of exactly the single process's batches and end with the same weights, up to
float summation order; rank 0 alone writes the checkpoint, model and stats.

A driver script (written into tmp_path) runs `train_prior` on each rank and logs, outside the
output dir, what the rank trained on and which files it created, removed or renamed under the
output dir (an audit hook: Python-level opens for writing, mkdir, rename, remove, rmtree).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from colorfilter.models.data import RankBatches
from colorfilter.models.stages import train_prior

from .synthetic import SEQ_LEN, job, micro_prior_config

REPO_ROOT = Path(__file__).resolve().parents[2]
WORLD_SIZE = 2
TIMEOUT_S = 300

DRIVER = r'''
"""One rank of a data-parallel prior run: train, then log what this rank read and wrote."""

import json
import os
import sys
from pathlib import Path

spec = json.loads(Path(sys.argv[1]).read_text())
out_root = os.path.abspath(spec["out_dir"])
writes = []
MUTATING = {"os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def under_out(path):
    if isinstance(path, int):
        return None
    path = os.path.abspath(os.fsdecode(path))
    inside = (path + os.sep).startswith(out_root + os.sep)
    return os.path.relpath(path, out_root) if inside else None


def audit(event, args):
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if mode else bool(flags & WRITE_FLAGS)
        touched = [path] if writing else []
    elif event in MUTATING:
        touched = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    for path in touched:
        if (rel := under_out(path)) is not None:
            writes.append([event, rel])


sys.addaudithook(audit)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import colorfilter.models.stages as stages  # noqa: E402
from colorfilter.models.config import PriorConfig  # noqa: E402
from colorfilter.models.data import RankBatches  # noqa: E402

batches, trained = [], []
plain_local_batch, plain_train_loop = RankBatches.local_batch, stages.train_loop


def recording_local_batch(self, step, seq_len, pad_id):
    input_ids, n_tokens = plain_local_batch(self, step, seq_len, pad_id)
    positions = self.global_positions(step)[self.rank :: self.world_size]
    batches.append({"step": step, "positions": positions.tolist(),
                    "input_ids": input_ids.tolist(), "n_tokens": n_tokens.tolist()})
    return input_ids, n_tokens


def capturing_train_loop(model, *args, **kwargs):
    trained.append(model)
    return plain_train_loop(model, *args, **kwargs)


RankBatches.local_batch = recording_local_batch
stages.train_loop = capturing_train_loop
job = stages.TrainJob(spec["pool"], spec["out_dir"], spec["tokenizer"], spec["seq_len"],
                      seed=spec["seed"], device="cpu", eval_data=spec["eval_dir"])
stats = stages.train_prior(job, PriorConfig(**spec["config"]))
rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
torch.save({k: v.detach().cpu() for k, v in trained[0].state_dict().items()},
           Path(spec["log_dir"], f"rank{rank}.pt"))
record = {"rank": rank, "world_size": world, "env_rank": int(os.environ.get("RANK", "-1")),
          "torch_threads": torch.get_num_threads(), "stats": stats, "writes": writes,
          "batches": batches}
Path(spec["log_dir"], f"rank{rank}.json").write_text(json.dumps(record))
if dist.is_initialized():
    dist.destroy_process_group()
'''


def _curve(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _run_torchrun(spec: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    driver = tmp_path / "ddp_driver.py"
    driver.write_text(DRIVER)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(WORLD_SIZE),
        str(driver),
        str(spec_path),
    ]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )


def _relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    diff = sum(float((a[k].double() - b[k].double()).square().sum()) for k in a)
    norm = sum(float(a[k].double().square().sum()) for k in a)
    return (diff / norm) ** 0.5


def test_two_rank_ddp_matches_one_process_with_the_same_global_batch(corpus, tmp_path, monkeypatch):
    # Checkpoint every 2 steps (kept), evaluate every 4: the rank-0-only paths inside the loop.
    single_cfg = micro_prior_config(checkpoint_every=2, keep_checkpoint=True, eval_every=4)
    # Each DDP rank holds 4 of the 8 rows per step; micro-batches of 2 exercise no_sync.
    ddp_cfg = dataclasses.replace(single_cfg, micro_batch_size=2)

    # One process, recording the batches it trains on.
    single_batches: list[dict] = []
    plain_local_batch = RankBatches.local_batch

    def recording_local_batch(self, step, seq_len, pad_id):
        input_ids, n_tokens = plain_local_batch(self, step, seq_len, pad_id)
        single_batches.append(
            {
                "positions": self.global_positions(step).tolist(),
                "input_ids": input_ids.tolist(),
                "n_tokens": n_tokens.tolist(),
            }
        )
        return input_ids, n_tokens

    monkeypatch.setattr(RankBatches, "local_batch", recording_local_batch)
    single_dir = tmp_path / "single" / "prior"
    single = train_prior(
        job(corpus.pool, single_dir, corpus.tokenizer, seed=3, eval_data=corpus.pool_eval),
        single_cfg,
    )
    monkeypatch.undo()

    # Two ranks under torchrun.
    ddp_dir, log_dir = tmp_path / "ddp" / "prior", tmp_path / "logs"
    log_dir.mkdir()
    spec = {
        "pool": str(corpus.pool),
        "tokenizer": str(corpus.tokenizer),
        "eval_dir": str(corpus.pool_eval),
        "out_dir": str(ddp_dir),
        "log_dir": str(log_dir),
        "seq_len": SEQ_LEN,
        "seed": 3,
        "config": dataclasses.asdict(ddp_cfg),
    }
    result = _run_torchrun(spec, tmp_path)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert result.returncode == 0, f"torchrun failed:\n{output}"
    ranks = [json.loads((log_dir / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]

    # The ranks really formed one process group, each on one thread.
    assert [(r["rank"], r["env_rank"], r["world_size"]) for r in ranks] == [(0, 0, 2), (1, 1, 2)]
    assert all(r["torch_threads"] == 1 for r in ranks)

    # Data: per step, the ranks hold disjoint halves (rows r::2) of the one-process batch.
    steps = single["steps"]
    assert steps == 8 and len(single_batches) == steps
    for rank in ranks:
        assert [b["step"] for b in rank["batches"]] == list(range(steps))
    for step, whole in enumerate(single_batches):
        parts = [rank["batches"][step] for rank in ranks]
        assert not set(parts[0]["positions"]) & set(parts[1]["positions"])
        for r, part in enumerate(parts):
            assert len(part["positions"]) == len(whole["positions"]) // WORLD_SIZE
            assert part["positions"] == whole["positions"][r::WORLD_SIZE]
            assert part["input_ids"] == whole["input_ids"][r::WORLD_SIZE]
            assert part["n_tokens"] == whole["n_tokens"][r::WORLD_SIZE]

    # Outputs: rank 0 wrote everything, rank 1 wrote nothing under the output dir.
    assert ranks[1]["writes"] == []
    renamed = [path for event, path in ranks[0]["writes"] if event == "os.rename"]
    assert renamed.count("train_stats.json") == renamed.count("model.safetensors") == 1
    written = [p for p in renamed if p.startswith("checkpoint/") and p.endswith("/state.pt")]
    assert written == [f"checkpoint/step-{s:08d}/state.pt" for s in range(2, steps + 1, 2)]
    files = sorted(str(p.relative_to(ddp_dir)) for p in ddp_dir.rglob("*") if p.is_file())
    assert files == sorted(
        str(p.relative_to(single_dir)) for p in single_dir.rglob("*") if p.is_file()
    )
    checkpoints = [f for f in files if f.startswith("checkpoint")]
    last = f"checkpoint/step-{steps:08d}"  # the older ones removed once it was committed
    assert checkpoints == [f"{last}/state.done.json", f"{last}/state.pt"]  # record beside
    assert not [f for f in files if Path(f).name.startswith(".tmp-")]

    # Stats: one record, returned identically on both ranks; tokens_seen is the global count.
    stats = json.loads((ddp_dir / "train_stats.json").read_text())
    assert ranks[0]["stats"] == ranks[1]["stats"] == stats
    assert stats["world_size"] == 2 and single["world_size"] == 1
    assert stats["config_hash"] == single["config_hash"]  # world size/micro-batch: runtime only
    assert stats["steps"] == steps and stats["batch_size"] == single_cfg.batch_size
    global_tokens = sum(sum(b["n_tokens"]) for rank in ranks for b in rank["batches"])
    assert stats["tokens_seen"] == single["tokens_seen"] == global_tokens
    assert global_tokens == sum(sum(b["n_tokens"]) for b in single_batches)
    checkpoint = torch.load(ddp_dir / last / "state.pt", weights_only=False)
    assert checkpoint["state"]["step"] == steps
    assert checkpoint["state"]["tokens_seen"] == global_tokens

    # The loss curve matches step by step: same tokens and lr exactly; global-mean loss and
    # pre-clip grad norm to float precision (a wrong gradient scale would show in grad_norm
    # even though Adam nearly ignores it in the weights).
    ddp_rows = _curve(ddp_dir / "loss_curve.csv")
    single_rows = _curve(single_dir / "loss_curve.csv")
    assert len(ddp_rows) == len(single_rows) == steps
    for ddp_row, single_row in zip(ddp_rows, single_rows, strict=True):
        for column in ("step", "tokens_seen", "lr"):
            assert ddp_row[column] == single_row[column]
        for column in ("train_loss", "z_loss", "grad_norm"):
            assert float(ddp_row[column]) == pytest.approx(float(single_row[column]), rel=1e-5)
        assert bool(ddp_row["eval_loss"]) == bool(single_row["eval_loss"])
        if single_row["eval_loss"]:
            assert float(ddp_row["eval_loss"]) == pytest.approx(
                float(single_row["eval_loss"]), rel=1e-5
            )
    assert stats["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-5)

    # Weights: both replicas identical bit for bit, the saved model is rank 0's, and it equals
    # the one-process model up to summation order. Reordering alone (one process, micro-batches
    # of 2 instead of 8) moves these weights by ~3e-6 relative and ~3e-5 at most per element:
    # AdamW's near-sign update amplifies rounding on coordinates whose gradient is ~0. A real
    # DDP error (a rank's data or gradients lost or doubled) moves them by ~1e-1.
    replicas = [torch.load(log_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    assert all(torch.equal(replicas[0][k], replicas[1][k]) for k in replicas[0])
    ddp_weights = load_file(ddp_dir / "model.safetensors")
    single_weights = load_file(single_dir / "model.safetensors")
    assert ddp_weights.keys() == single_weights.keys()
    assert all(torch.equal(ddp_weights[k], replicas[0][k]) for k in ddp_weights)
    assert _relative_difference(single_weights, ddp_weights) < 5e-5
    for name in single_weights:
        torch.testing.assert_close(ddp_weights[name], single_weights[name], rtol=1e-5, atol=5e-4)
