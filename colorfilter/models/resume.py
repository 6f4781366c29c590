"""Resumable training state on any backend: one commit unit per checkpoint, checked before use.

    <model folder>/checkpoint/
      step-00000020/state.pt          model, optimizer, RNG and loop state (torch.save)
      step-00000020/state.done.json   its record (colorfilter.io.commit), written last: size,
                                      sha256, the config hash and the step

A checkpoint is never overwritten in place: each is written into its own step folder, and the
older ones are removed only once the new one's record is written, so a kill at any moment
leaves a checkpoint a rerun can resume from. A resume takes the newest checkpoint whose record
parses, whose bytes match it (size and sha256) and that was written for this config; each one
it passes over is one log line saying why and where training goes on from. A damaged checkpoint
is never loaded: altered bytes in a pickled state can load without error as NaN weights.

Run folders of earlier versions hold one `checkpoint/state.pt` with `checkpoint/state.done.json`
(sizes only): still resumed, checked as far as their record allows (size; and the weights must
be finite).
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.io.commit import Unit, commit_unit, parse_unit, problems
from colorfilter.io.faults import first_line
from colorfilter.io.location import Location, as_location
from colorfilter.io.storage import (
    file_sha256,
    filesystem,
    list_dir,
    open_write,
    read_many,
    remove,
    stat_many,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"
RECORD_NAME = "state.done.json"  # beside state.pt, in its step folder (or, legacy, checkpoint/)
STEP_FOLDER = re.compile(r"step-(\d{8})")


@dataclass
class TrainState:
    """Everything a resumed run needs besides the weights and optimizer."""

    step: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)


def step_folder(folder: Path | Location, step: int) -> Location:
    """The folder of the checkpoint written after `step` optimizer steps."""
    return as_location(folder).join(f"step-{step:08d}")


class _HashingWriter:
    """A write-only stream that hashes what passes through it (torch.save needs only write).

    A big block (a tensor's storage) is hashed on a helper thread while it is written, so the
    hash costs about max(hash, write) instead of their sum (hashlib and file writes release
    the GIL); each write returns only once its block is hashed, so blocks are hashed in order
    and torch may reuse its buffer.
    """

    OVERLAP_BYTES = 1 << 20

    def __init__(self, handle: Any, pool: ThreadPoolExecutor) -> None:
        self.handle, self.pool, self.sha = handle, pool, hashlib.sha256()

    def write(self, data: Any) -> int:
        if len(data) < self.OVERLAP_BYTES:
            self.sha.update(data)
            return self.handle.write(data)
        hashed = self.pool.submit(self.sha.update, data)
        try:
            return self.handle.write(data)
        finally:
            hashed.result()

    def flush(self) -> None:
        self.handle.flush()


def save_checkpoint(
    folder: Path | Location, model: Any, optimizer: Any, state: TrainState, config_hash: str
) -> Location:
    """Write model, optimizer, RNG and loop state as the unit `step-NNNNNNNN/` under `folder`
    (hashed as it is written), then its record; only then remove the older checkpoints.
    Returns the record."""
    import torch

    payload = {
        "config_hash": config_hash,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "state": state.__dict__,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy_rng": np.random.get_state(),
    }
    unit = step_folder(folder, state.step)
    record = unit.join(RECORD_NAME)
    remove(record)  # an earlier try at this step (rerun after a fallback): not trusted now
    target = unit.join(CHECKPOINT_FILE)
    with open_write(target) as handle, ThreadPoolExecutor(1) as pool:  # temp-then-rename
        writer = _HashingWriter(handle, pool)  # locally, one upload on a bucket
        torch.save(payload, writer)
    meta = {"config_hash": config_hash, "step": state.step}
    commit_unit(record, [target], meta, sha256={CHECKPOINT_FILE: writer.sha.hexdigest()})
    prune_checkpoints(folder, keep=unit.name)
    return record


def prune_checkpoints(folder: Path | Location, keep: str) -> None:
    """Remove every checkpoint under `folder` but the step folder `keep`: records first (so no
    rerun trusts a half-removed one), then their files; earlier versions' single one too."""
    folder = as_location(folder)
    older = [loc for loc in list_dir(folder)
             if loc.name != keep and STEP_FOLDER.fullmatch(loc.name)]  # fmt: skip
    for loc in [*(o.join(RECORD_NAME) for o in older), folder.join(RECORD_NAME)]:
        remove(loc)
    for loc in older:
        remove(loc, recursive=True)
    remove(folder.join(CHECKPOINT_FILE))


@dataclass(frozen=True)
class _Candidate:
    """A checkpoint found under the folder, before any check."""

    step: int | None  # from its folder's name (None: the earlier versions' single checkpoint)
    record: Location

    def label(self, unit: Unit | None) -> str:
        step = self.step if self.step is not None else (unit.meta.get("step") if unit else None)
        where = self.record.parent.url
        return f"checkpoint step {step} in {where}" if step is not None else f"checkpoint {where}"


def candidates(folder: Path | Location) -> list[_Candidate]:
    """The checkpoints under `folder`, newest first (the earlier versions' one last: a run
    resumed from it has written only newer ones since)."""
    folder = as_location(folder)
    listing = list_dir(folder)
    found = sorted(
        ((int(m.group(1)), loc) for loc in listing if (m := STEP_FOLDER.fullmatch(loc.name))),
        key=lambda pair: pair[0], reverse=True,
    )  # fmt: skip
    out = [_Candidate(step, loc.join(RECORD_NAME)) for step, loc in found]
    if any(loc.name in (CHECKPOINT_FILE, RECORD_NAME) for loc in listing):
        out.append(_Candidate(None, folder.join(RECORD_NAME)))
    return out


def resume_checkpoint(
    folder: Path | Location | None, model: Any, optimizer: Any, config_hash: str,
    announce: bool = True,
) -> TrainState | None:  # fmt: skip
    """Restore the newest usable checkpoint under `folder` into `model` and `optimizer` and
    return its loop state; None (train from scratch) when there is none. Each checkpoint
    passed over is one warning (`announce`: rank 0 says it, the other ranks stay quiet)."""
    if folder is None:
        return None
    found = candidates(folder)
    records = read_many(c.record for c in found)
    skipped: list[str] = []
    for candidate in found:
        data = records[candidate.record.url]
        unit = parse_unit(candidate.record, data)
        why, payload = _check(candidate, data, unit, config_hash)
        if why is None:
            state = _restore(payload, model, optimizer)
            _announce(skipped, f"resuming from step {state.step}", announce)
            return state
        skipped.append(f"{candidate.label(unit)} {why}")
    _announce(skipped, "training from scratch", announce)
    return None


def _announce(skipped: list[str], outcome: str, announce: bool) -> None:
    for line in skipped if announce else []:
        log.warning("%s: %s", line, outcome)


def _check(
    candidate: _Candidate, data: bytes | None, unit: Unit | None, config_hash: str
) -> tuple[str | None, dict | None]:
    """(None, the loaded payload) for a usable checkpoint, else (why not, None)."""
    if data is None:
        return "is incomplete (no record: the run stopped while writing it)", None
    if unit is None:
        return "is damaged (its record does not parse)", None
    if unit.meta.get("config_hash") != config_hash:
        return "was written for another config", None
    found = problems(unit, stat_many(unit.locations()), verify_sha256=False)
    if found:
        loc, reason = found[0]
        return f"is damaged ({loc.name}: {reason})", None
    with tempfile.TemporaryDirectory(prefix="colorfilter-ckpt-") as tmp:
        why, payload = _load_verified(unit, Path(tmp))
    if why is None and payload.get("config_hash") != config_hash:
        return "was written for another config", None
    return why, payload


def _load_verified(unit: Unit, tmp: Path) -> tuple[str | None, dict | None]:
    """Read the unit's state file (a local copy when on a bucket: read once, hashed, loaded),
    check its sha256 against the record, then load it."""
    import torch

    loc = unit.base.join(CHECKPOINT_FILE)
    entry = unit.entry(loc) or {}
    local = Path(loc.path) if loc.is_local else tmp / loc.name
    if not loc.is_local:
        filesystem(loc).get_file(loc.path, str(local))
    if "sha256" in entry:
        got = file_sha256(str(local))
        if got != entry["sha256"]:
            return (f"is damaged ({loc.name}: sha256 {got[:12]}..., its record says "
                    f"{entry['sha256'][:12]}...)"), None  # fmt: skip
    try:
        payload = torch.load(local, map_location="cpu", weights_only=False)
    except Exception as exc:  # a size-only record (earlier versions) let damage through
        return f"is damaged ({loc.name} does not load: {first_line(exc, 200)})", None
    if "sha256" not in entry and not _finite(payload.get("model", {})):
        return f"is damaged ({loc.name} holds non-finite weights)", None
    return None, payload


def _restore(payload: dict, model: Any, optimizer: Any) -> TrainState:
    import torch

    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["torch_rng"])
    if payload.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    np.random.set_state(payload["numpy_rng"])
    return TrainState(**payload["state"])


def _finite(weights: dict) -> bool:
    import torch

    return all(torch.isfinite(t).all() for t in weights.values()
               if isinstance(t, torch.Tensor) and t.is_floating_point())  # fmt: skip
