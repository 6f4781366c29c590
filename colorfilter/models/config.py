"""Settings for training the two auxiliary models (standard library only: the CLI imports this).

Defaults follow the paper's recipe (arXiv 2406.10670, NOTES section 1) where it is scale-free:
AdamW lr 1e-3, betas (0.9, 0.95), no weight decay, cosine to 0.1x, grad clip 1.0, z-loss, bf16
on GPU. Sizes (preset, token budget, batch) default to the paper's 150m prior; a demo config
overrides them (see the README of `colorfilter.models`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from colorfilter.configtools import Checks, is_runtime
from colorfilter.io.location import SCHEMES
from colorfilter.models.presets import PRESETS
from colorfilter.names import DATA_SAMPLINGS

MODEL_SCHEMES = frozenset(s for s in SCHEMES if s)  # prior.init_from: s3, gs, hf, file URLs
TRAIN_DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16")  # models.runtime.autocast_dtype


@dataclass
class TrainConfig:
    """Optimizer and runtime settings shared by both stages."""

    batch_size: int = 256  # sequences per optimizer step, over all data-parallel ranks
    # sequences per forward pass on one rank, accumulated up to the batch; 0 = planned from the
    # memory model (models/memory.py): the largest that fits the GPU; on CPU the whole local
    # batch unless that exceeds half the available host memory
    micro_batch_size: int = 0
    gpu_memory_gb: float = 0.0  # GPU memory the plan may use; 0 = detect (80 when planning)
    lr: float = 1e-3  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    weight_decay: float = 0.0  # AdamW weight decay (applied to matrices only)
    warmup_steps: int = 1000  # linear warmup; capped at a tenth of the run
    min_lr_ratio: float = 0.1  # cosine ends at lr * min_lr_ratio on the run's last step
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    z_loss: float = 1e-4  # z-loss coefficient on log(Z)^2 per token; 0 disables it
    max_steps: int = 0  # cap on optimizer steps; 0 = no cap (the data decides)
    dtype: str = "auto"  # "auto" (bf16 autocast on cuda, fp32 on cpu), "float32", "bfloat16"
    compile: bool = False  # torch.compile the model (cuda only; worth it for long runs)
    checkpoint_every: int = 200  # optimizer steps between resumable checkpoints; 0 = never
    keep_checkpoint: bool = False  # keep out_dir/checkpoint/ after the stage finishes
    eval_every: int = 0  # steps between held-out evaluations during training; 0 = at end only
    eval_batch_size: int = 32  # sequences per forward pass when evaluating
    eval_max_chunks: int = 0  # cap on eval chunks (0 = the whole eval split)
    torch_threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    progress: bool = True  # show a progress bar (rank 0 only)

    def validate(self, where: str) -> list[str]:
        """Problems of this section, one line each (empty if usable)."""
        check = Checks(where)
        check.at_least("batch_size", self.batch_size, 1)
        check.at_least("micro_batch_size", self.micro_batch_size, 0)
        check.positive("lr", self.lr)
        for i, beta in enumerate(self.betas):
            if not (isinstance(beta, float) and 0 <= beta < 1):
                check.add(f"betas[{i}]", f"must be within [0, 1), got {beta!r}")
        for name in ("weight_decay", "grad_clip", "z_loss"):
            check.at_least(name, getattr(self, name), 0)
        check.within("min_lr_ratio", self.min_lr_ratio, 0, 1)
        for name in ("warmup_steps", "max_steps", "checkpoint_every", "eval_every"):
            check.at_least(name, getattr(self, name), 0)
        check.at_least("eval_batch_size", self.eval_batch_size, 1)
        check.at_least("eval_max_chunks", self.eval_max_chunks, 0)
        check.at_least("torch_threads", self.torch_threads, 0)
        check.one_of("dtype", self.dtype, TRAIN_DTYPES)
        return check.problems


@dataclass
class PriorConfig(TrainConfig):
    """The prior: pre-trained on a seeded random slice of the pool, or taken from a checkpoint."""

    preset: str = "olmo-150m"  # model preset: micro, tiny, mini, olmo-150m (models/presets.py)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # HF config fields to change
    init_from: str = ""  # HF checkpoint dir or URL to use as the prior as-is (no pre-training)
    token_budget: int = 3_100_000_000  # pool tokens to pre-train on (a seeded random slice)
    # how the slice is drawn: "chunks" = seeded single chunks (every rank reads the pool's whole
    # token column and holds the slice); "blocks" = seeded whole row groups of the pool shards
    # (prepare.row_group_rows), each rank reading and streaming only its own (models/blocks.py)
    data_sampling: str = "chunks"
    block_buffer_rows: int = 65536  # blocks: rows a rank holds and shuffles at once (>= 1 block)

    def validate(self, where: str = "prior") -> list[str]:
        check = Checks(where)
        check.problems = super().validate(where)
        check.one_of("preset", self.preset, sorted(PRESETS))
        check.one_of("data_sampling", self.data_sampling, DATA_SAMPLINGS)
        check.at_least("block_buffer_rows", self.block_buffer_rows, 1)
        if not self.init_from:
            check.at_least("token_budget", self.token_budget, 1)
        else:
            # a local HF checkpoint folder or a URL of one (fetched with io.cache.local_copy)
            check.path("init_from", self.init_from, schemes=MODEL_SCHEMES)
        return check.problems


@dataclass
class ConditionalConfig(TrainConfig):
    """The conditional: the prior fine-tuned on the downstream train split, fresh optimizer."""

    epochs: int = 1  # passes over the downstream train split
    warmup_steps: int = 50  # linear warmup; capped at a tenth of the run

    def validate(self, where: str = "conditional") -> list[str]:
        check = Checks(where)
        check.problems = super().validate(where)
        check.at_least("epochs", self.epochs, 1)
        return check.problems


# Prior fields that only matter under `data_sampling: blocks`: left out of the config hash while
# chunks are sampled (with data_sampling itself), so runs from before they existed keep theirs.
BLOCK_FIELDS = ("data_sampling", "block_buffer_rows")


def hashed_settings(settings: dict[str, Any], section: str) -> dict[str, Any]:
    """The fields of a stage's settings (asdict; `section`: prior or conditional) that decide
    its weights: everything but configtools.RUNTIME_KEYS."""
    kept = {k: v for k, v in settings.items() if not is_runtime(section, k)}
    if kept.get("data_sampling") == "chunks":
        kept = {k: v for k, v in kept.items() if k not in BLOCK_FIELDS}
    return kept
