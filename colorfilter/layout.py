"""The run layout: every path under `output_dir`, and "has stage X run here?", in one place.

An output dir is a local folder or a bucket prefix (s3://, gs://, hf://); every location here is
a `colorfilter.io.storage.Location` made with `join` from the root, so the same code serves
both. Stages ask this module for their paths and for the outputs of earlier stages
(`require`), instead of joining strings and writing their own "run X first" messages.

    OUTPUT/
      config.yaml                 the resolved config of the last stage run here
      <stage>.done.json           a stage's finished marker, written last (prepare, distill,
                                  score, evaluate; the train stages' are their model records)
      .colorfilter-lease.json     the lease of the run writing here now (colorfilter.io.lease)
      logs/                       error logs (colorfilter.reporting.report_unexpected)
      tokenizer/                  the run's tokenizer (prepare)
      tokens/<split>/             token shards, one record per input file, stats.json
                                  (prepare; split = pool, downstream_train, downstream_eval)
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
completion-record mechanism, for units and for stage markers alike, is `colorfilter.io.commit`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from colorfilter.errors import ConfigError, DamagedDataError
from colorfilter.io import storage
from colorfilter.io.commit import (
    Unit,
    commit_unit,
    is_committed,
    parse_unit,
    problems,
    read_unit,
)
from colorfilter.io.config import StorageConfig
from colorfilter.io.faults import damaged_error
from colorfilter.io.lease import LEASE_NAME
from colorfilter.io.location import Location

SPLITS = ("pool", "downstream_train", "downstream_eval")
MODELS = ("prior", "conditional")
SELECT_WORK = "_work"
MODEL_CHECKPOINT = "checkpoint"  # a model folder's resumable state (kept with keep_checkpoint)
STATS = "stats.json"
MODEL_RECORD = "model.done.json"  # a model folder's completion record (colorfilter.io.commit)
MARKER_SUFFIX = ".done.json"  # OUTPUT/<stage>.done.json: a stage's finished marker


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
    def marker(self, stage: str) -> Location:
        """The stage's finished marker: a colorfilter.io.commit record written last, listing
        what the stage's outputs are (its summary, its units' records) with sizes and sha256."""
        marker = _stage(stage).marker
        if marker is None:
            raise ValueError(f"stage {stage!r} has no marker (each of its folders has a manifest)")
        return marker(self)

    def stage_unit(self, stage: str) -> Unit | None:
        """The stage's marker when it is whole (it parses, everything it lists is there with
        its size), else None: the one answer to "has `stage` finished here?"."""
        return is_committed(self.marker(stage))

    def has_run(self, stage: str) -> bool:
        return self.stage_unit(stage) is not None

    def require(self, stage: str, what: str | None = None) -> Unit:
        """The stage's marker when it is whole (see `require_record`)."""
        return require_record(self.marker(stage), stage, what or _stage(stage).what)

    def check_tokenizer(self) -> str:
        """The run's tokenizer is the one prepare tokenized with (its folder's sha256, recorded
        in prepare's marker): a swapped or damaged folder is refused naming both hashes (and
        the first file that changed). Returns the hash."""
        unit = read_unit(self.marker("prepare"))
        if unit is None:
            self.require("prepare")  # says whether prepare never ran or its record is damaged
        recorded = unit.meta.get("tokenizer_sha256")
        current = storage.folder_sha256(self.tokenizer)
        if recorded and recorded != current:
            changed = [(loc, why) for loc, why in problems(unit, _sizes(unit), False)
                       if loc.url.startswith(self.tokenizer.url + "/")]  # fmt: skip
            detail = f"; {changed[0][0].name}: {changed[0][1]}" if changed else ""
            raise DamagedDataError(
                f"the run's tokenizer in {self.tokenizer.url} (sha256 {current}) is not the one "
                f"the pool was tokenized with (sha256 {recorded}{detail}): restore it, or rerun "
                "`colorfilter prepare` with --overwrite and every stage after it"
            )
        self.require("prepare")
        return current

    def finish_stage(self, stage: str, objects: Iterable[Location], meta: dict) -> None:
        """Write the stage's marker, last: it lists `objects` with sizes and sha256."""
        commit_unit(self.marker(stage), objects, meta, sha256=True)

    def withdraw_stage(self, stage: str) -> None:
        """Remove the stage's marker, first, when a rerun is about to redo some of its work."""
        storage.remove(self.marker(stage))

    def has_outputs(self) -> bool:
        """Whether any stage wrote outputs here (anything but the saved config and logs)."""
        names = {loc.name for loc in storage.list_dir(self.root)}
        return bool(names - {self.config_file.name, self.logs.name, LEASE_NAME})

    def stages_run(self) -> list[str]:
        """The stages whose outputs are here, in pipeline order (for `colorfilter status`)."""
        return [name for name, stage in _STAGES.items() if stage.marker and self.has_run(name)]

    def outputs_from(self, stage: str) -> list[Location]:
        """The folders written by `stage` and every later stage: what a config change in
        `stage` makes stale (`--overwrite` removes them, their markers first)."""
        return [loc for later in self._stages_from(stage) for loc in later.folders(self)]

    def markers_from(self, stage: str) -> list[Location]:
        """The finished markers of `stage` and every later stage."""
        return [later.marker(self) for later in self._stages_from(stage) if later.marker]

    def _stages_from(self, stage: str) -> list[_Stage]:
        names = list(_STAGES)
        return [_STAGES[name] for name in names[names.index(_stage(stage).name):]]


@dataclass(frozen=True)
class _Stage:
    """Where one stage's outputs live: its finished marker and its folders."""

    name: str
    what: str  # named in "not found: run `colorfilter STAGE` first"
    marker: Callable[[RunLayout], Location] | None  # None: no stage-wide marker (select)
    folders: Callable[[RunLayout], list[Location]]


def _root_marker(stage: str) -> Callable[[RunLayout], Location]:
    return lambda run: run.root.join(f"{stage}{MARKER_SUFFIX}")


# in pipeline order (scores/dsir, a cache of the tokens, goes with prepare)
_STAGES = {stage.name: stage for stage in (
    _Stage("prepare", "the run's tokenizer and pool token shards", _root_marker("prepare"),
           lambda run: [run.tokenizer, run.tokens_root, run.dsir]),
    _Stage("train-prior", "the prior model", lambda run: run.model("prior").join(MODEL_RECORD),
           lambda run: [run.model("prior")]),
    _Stage("train-conditional", "the conditional model",
           lambda run: run.model("conditional").join(MODEL_RECORD),
           lambda run: [run.model("conditional")]),
    _Stage("distill", "the cascade's cheap scorer and cheap scores", _root_marker("distill"),
           lambda run: [run.sample_scores, run.cheap_model, run.cheap_scores]),
    _Stage("score", "the pool's scores", _root_marker("score"), lambda run: [run.scores]),
    _Stage("select", "the selections", None, lambda run: [run.selected_root]),
    _Stage("evaluate", "the evaluation report", _root_marker("evaluate"),
           lambda run: [run.eval]),
)}  # fmt: skip


def require_record(record: Location, stage: str, what: str, verify_sha256: bool = False,
                   damaged_as: str | None = None) -> Unit:  # fmt: skip
    """The unit `record` describes, when whole: what a stage checks before it reads another
    stage's output. No record, or every file it lists gone: a ConfigError "WHAT not found ...:
    run `colorfilter STAGE` first". A record cut short, or a file missing, cut short (or, with
    `verify_sha256`, altered) since: a DamagedDataError (exit 3) naming the file and STAGE
    (`damaged_as`: what to call the file, for one outside the layout's folders)."""
    data = storage.read_many([record])[record.url]
    if data is None:
        raise ConfigError(f"{what} not found at {record.url}: run `colorfilter {stage}` first")
    known = (damaged_as, stage) if damaged_as else None
    unit = parse_unit(record, data)
    if unit is None:
        raise damaged_error(record.url, "it does not parse as a completion record", known)
    found = problems(unit, _sizes(unit), verify_sha256=verify_sha256)
    if found and len(found) == len(unit.objects) and all(r == "missing" for _, r in found):
        where = found[0][0].parent.url  # every output gone (removed by hand, say)
        raise ConfigError(f"{what} not found at {where}: run `colorfilter {stage}` first")
    if found:
        raise damaged_error(found[0][0].url, found[0][1], known)
    return unit


def _sizes(unit: Unit) -> dict[str, int | None]:
    return storage.stat_many(unit.locations())


def _stage(name: str) -> _Stage:
    if name not in _STAGES:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(_STAGES)}")
    return _STAGES[name]


def _known(name: str, names: tuple[str, ...], what: str) -> str:
    if name not in names:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(names)}")
    return name
