"""Scoring precision: what `score.precision` means on a device, and what a run actually used.

Names, not torch dtypes (no torch import): the driver resolves the precision before any
worker starts, puts the result into the scoring fingerprint and hands the workers a concrete
setting, so a shard's record says what ran (weights dtype, autocast dtype, device type), never
"auto". A resume whose precision differs from the shards already scored is refused: fp32 and bf16
scores differ slightly, and a top-k over a mix of both would be ranked on two scales.

- `fp32`: fp32 weights, no autocast (exact; the CPU default).
- `fp32-autocast-bf16`: fp32 weights under bf16 autocast, the paper's setting (matmuls in bf16,
  norms, softmax and the residual stream in fp32; the CUDA default).
- `bf16`: bf16 weights (half the weight memory; everything in bf16 except the fp32 loss).
- `fp16`: fp16 weights (GPUs without bf16).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from colorfilter.errors import ConfigError
from colorfilter.io.location import Location, as_location
from colorfilter.io.storage import read_many
from colorfilter.scoring.config import AUTO_PRECISION, NO_AUTOCAST_BACKENDS, PRECISIONS
from colorfilter.scoring.shard import record_shard_stem, score_records


@dataclass(frozen=True)
class Precision:
    """A resolved scoring precision: every field is concrete."""

    name: str  # one of PRECISIONS
    weights: str  # torch dtype name of the loaded weights
    autocast: str  # torch dtype name of the autocast, or "none"
    device: str  # device type: cpu | cuda

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def describe(self) -> str:
        autocast = f" under {self.autocast} autocast" if self.autocast != "none" else ""
        return f"{self.name} ({self.weights} weights{autocast} on {self.device})"


def device_type(device: str) -> str:
    """'cuda:1' -> 'cuda'; 'cpu' -> 'cpu' (no 'auto' here: resolve the device first)."""
    kind = device.split(":", 1)[0]
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"cannot score on device {device!r}: use cpu, cuda or cuda:N")
    return kind


def resolve_precision(name: str, device: str, backend: str = "torch") -> Precision:
    """The concrete precision `name` means on `device` for `backend`."""
    kind = device_type(device)
    if name == "auto":
        name = AUTO_PRECISION[backend in NO_AUTOCAST_BACKENDS][kind]
    if name not in PRECISIONS:
        raise ConfigError(f"score.precision must be one of auto, {', '.join(PRECISIONS)}")
    weights, autocast = PRECISIONS[name]
    if autocast != "none" and backend in NO_AUTOCAST_BACKENDS:
        raise ConfigError(f"score.precision={name} needs the torch backend, not {backend}")
    return Precision(name, weights, autocast, kind)


def recorded_precisions(score_dir: str | Path | Location) -> dict[str, list[str]]:
    """Precision description -> names of the shards whose completion record says it ran.

    Every record counts, committed or not: a shard scored at another precision is refused
    even where its object has since gone.
    """
    found: dict[str, list[str]] = {}
    records = score_records(score_dir)
    for record, data in zip(records, read_many(records).values()):
        try:
            payload = json.loads(data) if data is not None else None
        except ValueError:
            continue  # a torn record: that shard is redone anyway
        meta = payload.get("meta") if isinstance(payload, dict) else None
        ran = ((meta if isinstance(meta, dict) else {}).get("stats") or {}).get("precision")
        if isinstance(ran, dict) and ran.get("name") in PRECISIONS:
            found.setdefault(Precision(**ran).describe(), []).append(record_shard_stem(record))
    return found


def check_resume_precision(score_dir: str | Path | Location, expected: Precision) -> None:
    """Refuse to add shards scored at `expected` to shards already scored at another precision."""
    others = {k: v for k, v in recorded_precisions(score_dir).items() if k != expected.describe()}
    if not others:
        return
    described, shards = next(iter(others.items()))
    where = as_location(score_dir).url
    raise ConfigError(
        f"{where} holds {len(shards)} shard(s) (e.g. {shards[0]}) scored at {described}, "
        f"but this run would score at {expected.describe()}; scores of two precisions must not "
        f"be ranked together. Set score.precision (and device) to match, or pass --overwrite "
        f"to rescore every shard"
    )
