"""The pipeline's stages in order, each a function (config, overwrite) -> stats dict.

Stage modules are imported only when a stage runs, so the CLI starts instantly.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from colorfilter.config import Config, check_output_dir_usable, save_resolved
from colorfilter.configtools import is_runtime, to_dict
from colorfilter.distill.config import CascadeConfig, distill_wanted, lm_pass_wanted
from colorfilter.errors import ConfigError, DamagedDataError, NotBuiltError
from colorfilter.io import storage
from colorfilter.layout import RunLayout

OPT_IN_STAGES = {"evaluate"}  # run only when asked for by name

# stage name -> "module:function"; None where this version does not provide the stage yet.
# `colorfilter run` runs them all but evaluate (an experiment on the data, not part of it).
STAGES: dict[str, str | None] = {
    "prepare": "colorfilter.pipeline.prepare:run_prepare",
    "train-prior": "colorfilter.pipeline.train:run_train_prior",
    "train-conditional": "colorfilter.pipeline.train:run_train_conditional",
    "distill": "colorfilter.pipeline.distill:run_distill",
    "score": "colorfilter.pipeline.score:run_score",
    "select": "colorfilter.pipeline.select:run_select",
    "evaluate": "colorfilter.pipeline.evaluate:run_evaluate",
}


def stage_names(stages: str | None, config: Config | None = None) -> list[str]:
    """The stages a whole-pipeline run runs: the comma-separated `stages`, or every stage this
    version provides except the opt-in ones (and `distill` unless the config asks for the
    cascade or a distilled method; `score` not when the selections rank no LM score)."""
    if not stages:
        skip = set(OPT_IN_STAGES)
        if config is None or not distill_wanted(config):
            skip.add("distill")
        if config is not None and not lm_pass_wanted(config.cascade.enabled,
                                                     config.selection.methods):  # fmt: skip
            skip.add("score")
        return [s for s, target in STAGES.items() if target is not None and s not in skip]
    names = stages.split(",")
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; stages: {', '.join(STAGES)}")
    return names


def stage_function(name: str) -> Callable[[Config, bool], dict]:
    """Import and return a stage's entry point, or say clearly that it is not built."""
    target = STAGES.get(name)
    if target is None:
        raise NotBuiltError(f"the '{name}' stage is not available in this version of colorfilter")
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


# Config keys whose change makes a stage's existing outputs (and everything after) stale. Keys of
# later stages only (selection, evaluate, release) never conflict: they write new folders.
_RESULT_KEYS = {
    "prepare": [
        "tokenizer",
        "seq_len",
        "data.pool",
        "data.downstream_train",
        "data.downstream_eval",
        "data.text_field",
        "data.source_field",
        "data.format",
        "data.hf_split",
        "prepare.rows_per_shard",
        "prepare.row_group_rows",  # the shards' layout: prior.data_sampling=blocks draws on it
        "prepare.max_segment_chars",
    ],
    "train-prior": ["seed", "prior"],
    "train-conditional": ["conditional"],
    "distill": ["cascade"],
    "score": ["score.backend", "score.precision"],
}


# Result keys added after configs were first saved, with the value that their absence meant: a
# saved config.yaml without one conflicts only if the current value differs from that.
_ADDED_DEFAULTS = {
    "prepare.row_group_rows": 0,
    "prior.data_sampling": "chunks",
    "prior.block_buffer_rows": 65536,
    **{f"cascade.{key}": value for key, value in to_dict(CascadeConfig()).items()},
}
_ADDED_SECTIONS = {"cascade"}  # a saved config without the section had its defaults


def result_keys(stage: str) -> list[str]:
    """Keys a stage's outputs depend on: its own and every earlier stage's."""
    keys: list[str] = []
    for name in STAGES:
        keys += _RESULT_KEYS.get(name, [])
        if name == stage:
            return keys
    return keys


def config_conflicts(stage: str, previous: dict, current: dict) -> list[str]:
    """Keys (dotted) whose values differ between the saved and the current config."""
    conflicts = []
    for key in result_keys(stage):
        old, new = _lookup(previous, key), _lookup(current, key)
        if key in _ADDED_SECTIONS:
            old, new = old or {}, new or {}
        if isinstance(old, dict) and isinstance(new, dict):
            for sub in sorted(set(old) | set(new)):
                absent = _ADDED_DEFAULTS.get(f"{key}.{sub}")
                before, after = old.get(sub, absent), new.get(sub, absent)
                if not is_runtime(key, sub) and before != after:
                    conflicts.append(f"{key}.{sub}: {before!r} -> {after!r}")
            continue
        if key in _ADDED_DEFAULTS:
            old = _ADDED_DEFAULTS[key] if old is None else old
            new = _ADDED_DEFAULTS[key] if new is None else new
        if old != new:
            conflicts.append(f"{key}: {old!r} -> {new!r}")
    return conflicts


def _lookup(data: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def check_output_dir(stage: str, config: Config, overwrite: bool) -> None:
    """Refuse to mix outputs of two configs in one output_dir, unless --overwrite."""
    run = RunLayout.of(config)
    saved = run.config_file
    if overwrite or not storage.exists(saved) or not run.has_outputs():
        return  # a run that failed before writing anything leaves nothing to protect
    previous = _saved_config(run)
    if previous is None:
        raise DamagedDataError(
            f"{saved.url} is damaged (not a YAML mapping): the config these outputs were made "
            "with is unknown; rerun with --overwrite to replace them"
        )
    conflicts = config_conflicts(stage, previous, to_dict(config))
    if conflicts:
        raise ConfigError(
            f"{config.output_dir} holds outputs made with a different config "
            f"({'; '.join(conflicts[:5])}). Use another output_dir, or --overwrite to redo the "
            f"'{stage}' stage with this config"
        )


def run_stage(
    name: str, config: Config, overwrite: bool = False, *, replace_stale: bool = True
) -> dict:
    """Run one stage after checking and saving the resolved config beside its outputs; with
    `overwrite`, outputs the config change makes stale go first (`replace_stale_outputs`;
    `run_stages` does that once for all its stages and passes replace_stale=False)."""
    function = stage_function(name)
    check_output_dir_usable(config.output_dir, config.storage)  # a clear error
    check_output_dir(name, config, overwrite)
    if is_main_process():
        if overwrite and replace_stale:
            replace_stale_outputs([name], config)
        save_resolved(config)
    return function(config, overwrite)


def run_stages(names: list[str], config: Config, overwrite: bool = False) -> None:
    """Run stages in order (`colorfilter run`): with `overwrite`, the saved config is compared
    once, before the first stage saves the new one, so a change in a later stage's keys is
    seen too."""
    if overwrite and is_main_process():
        check_output_dir_usable(config.output_dir, config.storage)
        replace_stale_outputs(names, config)
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        run_stage(name, config, overwrite, replace_stale=False)


# -- --overwrite: a clean slate for what the config changes ---------------------------------
# Sections whose settings name and shape a stage's outputs beyond result_keys (which lists the
# keys that make a plain rerun refuse): changing them under --overwrite replaces the outputs.
_OWN_SECTIONS = {"select": ["selection"], "evaluate": ["selection", "evaluate"]}


def replace_stale_outputs(stages: list[str], config: Config) -> list[str]:
    """Under --overwrite, before the new run writes: compare the saved config.yaml with
    `config` stage by stage in pipeline order; from the first stage of `stages` whose outputs
    the change affects (`stage_changes`), remove that stage's outputs and every later stage's
    (RunLayout.outputs_from), on any backend, and say so in one line. Nothing made under the
    old config (a `selected/<method>-tau<τ>/` of a dropped method, an `eval/` report, DSIR
    weights of old tokens) is left looking current. Returns the URLs removed."""
    run = RunLayout.of(config)
    if not storage.exists(run.config_file) or not run.has_outputs():
        return []
    previous = _saved_config(run)
    current = to_dict(config)
    for stage in [s for s in STAGES if s in stages]:
        changes = (stage_changes(stage, previous, current) if previous is not None
                   else ["the saved config.yaml is damaged"])
        if not changes:
            continue
        for marker in run.markers_from(stage):  # first: nothing looks finished meanwhile
            storage.remove(marker)
        removed = [loc for loc in run.outputs_from(stage) if storage.exists(loc)]
        for loc in removed:
            storage.remove(loc, recursive=True)
        if removed:
            names = ", ".join(loc.relative_to(run.root) for loc in removed)
            print(f"--overwrite: the config changed for '{stage}' ({'; '.join(changes[:3])}); "
                  f"removed what the old one made: {names}", file=sys.stderr, flush=True)
        return [loc.url for loc in removed]
    return []


def stage_changes(stage: str, previous: dict, current: dict) -> list[str]:
    """Keys (old -> new) whose change makes `stage`'s outputs stale, earlier stages' included."""
    changes = config_conflicts(stage, previous, current)
    for section in _OWN_SECTIONS.get(stage, []):
        old, new = previous.get(section) or {}, current.get(section) or {}
        for key in sorted(set(old) | set(new)):
            if not is_runtime(section, key) and old.get(key) != new.get(key):
                changes.append(f"{section}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return changes


def _saved_config(run: RunLayout) -> dict | None:
    """The saved config.yaml as a dict ({} when empty), or None when it does not parse."""
    import yaml

    try:
        loaded = yaml.safe_load(storage.read_text(run.config_file))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    if loaded is None:
        return {}
    return loaded if isinstance(loaded, dict) else None


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun launch, which leave shared outputs to rank 0."""
    return os.environ.get("RANK", "0") == "0"
