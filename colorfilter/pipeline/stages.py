"""The pipeline's stages in order, each a function (config, overwrite) -> stats dict.

Stage modules are imported only when a stage runs, so the CLI starts instantly.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from colorfilter.config import Config
from colorfilter.errors import NotBuiltError

# stage name -> "module:function"; None where this version does not provide the stage yet
STAGES: dict[str, str | None] = {
    "prepare": "colorfilter.pipeline.prepare:run_prepare",
    "train-prior": "colorfilter.pipeline.train:run_train_prior",
    "train-conditional": "colorfilter.pipeline.train:run_train_conditional",
    "score": "colorfilter.pipeline.score:run_score",
    "select": "colorfilter.pipeline.select:run_select",
    "evaluate": None,
}


def stage_function(name: str) -> Callable[[Config, bool], dict]:
    """Import and return a stage's entry point, or say clearly that it is not built."""
    target = STAGES.get(name)
    if target is None:
        raise NotBuiltError(f"the '{name}' stage is not available in this version of colorfilter")
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def run_stage(name: str, config: Config, overwrite: bool = False) -> dict:
    """Run one stage after saving the resolved config beside its outputs."""
    from colorfilter.config import save_resolved

    function = stage_function(name)
    config.output_path.mkdir(parents=True, exist_ok=True)
    save_resolved(config)
    return function(config, overwrite)
