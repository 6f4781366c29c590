"""The run layout: every path under `output_dir`, and "has stage X run here?", in one place.

An output dir is a local folder or a bucket prefix (s3://, gs://, hf://); every location here is
a `colorfilter.io.storage.Location` made with `join` from the root, so the same code serves
both. Stages ask this module for their paths and for the outputs of earlier stages
(`require`), instead of joining strings and writing their own "run X first" messages.

    OUTPUT/
      config.yaml                 the resolved config of the last stage run here
      .colorfilter-lease.json     the lease of the run writing here now (colorfilter.io.lease)
      logs/                       error logs (colorfilter.reporting.report_unexpected)
      tokenizer/                  the run's tokenizer (prepare)
      tokens/<split>/             token shards + stats.json (prepare; split = pool,
                                  downstream_train, downstream_eval)
      models/<prior|conditional>/ HF model folders (train-prior, train-conditional)
      scores/sample/              the cascade's sample scored by the LM pair, with tokens and
                                  per-position loss differences (distill)
      models/cheap/               the cheap scorer distilled from them + fidelity report (distill)
      scores/cheap/               cheap scores of every pool chunk, candidates.npy, stats.json
                                  (distill)
      scores/pool/                score shards + stats.json (score; the candidates only
                                  under the cascade)
      scores/dsir/                DSIR weights (select, when a dsir method is asked for)
      selected/<name>/            one dataset folder per selection, manifest.json last (select)
      selected/_work/             select's map/reduce runs (removed when select finishes)
      eval/                       report.json, runs/ (evaluate)

Which settings make an output stale is `colorfilter.pipeline.stages.result_keys`; the one
completion-record mechanism for units is `colorfilter.io.commit`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.config import StorageConfig
from colorfilter.io.location import Location

SPLITS = ("pool", "downstream_train", "downstream_eval")
MODELS = ("prior", "conditional")
SELECT_WORK = "_work"
MODEL_CHECKPOINT = "checkpoint"  # a model folder's resumable state (kept with keep_checkpoint)
STATS = "stats.json"
MODEL_RECORD = "model.done.json"  # a model folder's completion record (colorfilter.io.commit)
LEASE_NAME = ".colorfilter-lease.json"  # the running writer's lease (colorfilter.io.lease)


@dataclass(frozen=True)
class RunLayout:
    """The locations of one run's outputs; pickles to Ray actors with its storage options."""

    root: Location

    @classmethod
    def at(cls, output_dir: str | Location, storage_cfg: StorageConfig | None = None) -> RunLayout:
        return cls(Location.parse(output_dir, storage_cfg, key="output_dir"))

    @classmethod
    def of(cls, config) -> RunLayout:
        """The layout of a Config's output_dir (with its storage options)."""
        return cls.at(config.output_dir, config.storage)

    @property
    def is_local(self) -> bool:
        return self.root.is_local

    # -- paths ------------------------------------------------------------------------------
    @property
    def config_file(self) -> Location:
        return self.root.join("config.yaml")

    @property
    def logs(self) -> Location:
        return self.root.join("logs")

    @property
    def tokenizer(self) -> Location:
        return self.root.join("tokenizer")

    @property
    def tokens_root(self) -> Location:
        return self.root.join("tokens")

    def tokens(self, split: str) -> Location:
        return self.tokens_root.join(_known(split, SPLITS, "split"))

    def token_stats(self, split: str) -> Location:
        return self.tokens(split).join(STATS)

    def model(self, name: str) -> Location:
        return self.root.join("models", _known(name, MODELS, "model"))

    @property
    def scores(self) -> Location:
        return self.root.join("scores", "pool")

    @property
    def score_stats(self) -> Location:
        return self.scores.join(STATS)

    @property
    def sample_scores(self) -> Location:
        return self.root.join("scores", "sample")

    @property
    def cheap_model(self) -> Location:
        return self.root.join("models", "cheap")

    @property
    def cheap_scores(self) -> Location:
        return self.root.join("scores", "cheap")

    @property
    def candidates(self) -> Location:
        return self.cheap_scores.join("candidates.npy")

    @property
    def distill_stats(self) -> Location:
        return self.cheap_scores.join(STATS)

    @property
    def dsir(self) -> Location:
        return self.root.join("scores", "dsir")

    @property
    def selected_root(self) -> Location:
        return self.root.join("selected")

    def selected(self, name: str) -> Location:
        return self.selected_root.join(name)

    @property
    def select_work(self) -> Location:
        return self.selected_root.join(SELECT_WORK)

    @property
    def eval(self) -> Location:
        return self.root.join("eval")

    @property
    def eval_runs(self) -> Location:
        return self.eval.join("runs")

    # -- has stage X run here? ----------------------------------------------------------------
    def has_run(self, stage: str) -> bool:
        """Whether `stage` finished here (its last-written output exists)."""
        return all(storage.exists(loc) for loc in _markers(self, stage))

    def require(self, stage: str, what: str | None = None) -> None:
        """ConfigError naming the missing output unless `stage` has run here."""
        for loc in _markers(self, stage):
            if not storage.exists(loc):
                label = what or _WHAT[stage]
                raise ConfigError(
                    f"{label} not found at {loc.url}: run `colorfilter {stage}` first"
                )

    def has_outputs(self) -> bool:
        """Whether any stage wrote outputs here (anything but the saved config and logs)."""
        names = {loc.name for loc in storage.list_dir(self.root)}
        return bool(names - {self.config_file.name, self.logs.name, LEASE_NAME})

    def stages_run(self) -> list[str]:
        """The stages whose outputs are here, in pipeline order (for `colorfilter status`)."""
        return [stage for stage in _MARKERS if self.has_run(stage)]

    def outputs_from(self, stage: str) -> list[Location]:
        """The folders written by `stage` and every later stage: what a config change in
        `stage` makes stale (`--overwrite` removes them, colorfilter.pipeline.replace)."""
        if stage not in _OUTPUTS:
            raise ValueError(f"unknown stage {stage!r}; known: {', '.join(_OUTPUTS)}")
        names = list(_OUTPUTS)
        return [loc for name in names[names.index(stage):] for loc in _OUTPUTS[name](self)]


def _known(name: str, names: tuple[str, ...], what: str) -> str:
    if name not in names:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(names)}")
    return name


# stage -> the outputs it writes last (their presence means it finished)
_MARKERS: dict[str, Callable[[RunLayout], list[Location]]] = {
    "prepare": lambda run: [run.tokenizer.join("tokenizer_config.json"), run.token_stats("pool")],
    "train-prior": lambda run: [run.model("prior").join(MODEL_RECORD)],
    "train-conditional": lambda run: [run.model("conditional").join(MODEL_RECORD)],
    "distill": lambda run: [run.distill_stats],
    "score": lambda run: [run.score_stats],
    "evaluate": lambda run: [run.eval.join("report.json")],
}
# stage -> the folders it writes, in pipeline order (scores/dsir is a cache of the tokens)
_OUTPUTS: dict[str, Callable[[RunLayout], list[Location]]] = {
    "prepare": lambda run: [run.tokenizer, run.tokens_root, run.dsir],
    "train-prior": lambda run: [run.model("prior")],
    "train-conditional": lambda run: [run.model("conditional")],
    "distill": lambda run: [run.sample_scores, run.cheap_model, run.cheap_scores],
    "score": lambda run: [run.scores],
    "select": lambda run: [run.selected_root],
    "evaluate": lambda run: [run.eval],
}
_WHAT = {
    "prepare": "the run's tokenizer and pool token shards",
    "train-prior": "the prior model",
    "train-conditional": "the conditional model",
    "distill": "the cascade's cheap scorer and cheap scores",
    "score": "the pool's scores",
    "evaluate": "the evaluation report",
}


def _markers(run: RunLayout, stage: str) -> list[Location]:
    if stage not in _MARKERS:
        raise ValueError(f"no completion marker for stage {stage!r}; known: {', '.join(_MARKERS)}")
    return _MARKERS[stage](run)
