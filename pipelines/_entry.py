"""The shared command line of the job entry points in this package.

Inside a Ray job the driver must join the job's cluster: Ray sets RAY_ADDRESS for every job, so
when it is set and the config names no `ray.address`, the run uses "auto" instead of starting a
second, local Ray (which would also fail on the `num_cpus` a demo config sets).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

RUN_ALL = "run"  # pseudo-stage: every available stage in order


def parse_args(stage: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Arguments of `python -m pipelines.<stage>`: the same as `colorfilter <stage>`."""
    what = "the whole pipeline" if stage == RUN_ALL else f"the {stage!r} stage"
    parser = argparse.ArgumentParser(
        prog=f"python -m pipelines.{_module_name(stage)}", description=f"Run {what} as a Ray job."
    )
    parser.add_argument("config", help="YAML config file (a path inside the job's working dir)")
    parser.add_argument(
        "--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set selection.tau=[16] (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true", help="replace outputs made with a different config"
    )
    if stage == RUN_ALL:
        parser.add_argument("--stages", help="comma-separated stages (default: all available)")
    return parser.parse_args(argv)


def _module_name(stage: str) -> str:
    return "run_all" if stage == RUN_ALL else stage.replace("-", "_")


def load_job_config(config_path: str, overrides: list[str]):
    """Load the config; inside a Ray job (RAY_ADDRESS set) join that cluster unless told else."""
    from colorfilter.config import load_config

    config = load_config(config_path, overrides)
    if config.ray.address is None and os.environ.get("RAY_ADDRESS"):
        config.ray.address = "auto"
    return config


def run(stage: str, argv: list[str] | None = None, loaded: dict | None = None) -> int:
    """Run one stage (or all of them) and print each stage's stats as JSON; return the exit code.

    `loaded` receives the config once it is loaded, so an error report can use its output_dir.
    """
    from colorfilter.config import check_environment
    from colorfilter.pipeline.stages import run_stage, stage_names

    args = parse_args(stage, argv)
    config = load_job_config(args.config, args.overrides)
    if loaded is not None:
        loaded["output_dir"] = config.output_dir
    check_environment(config)
    names = stage_names(args.stages) if stage == RUN_ALL else [stage]
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        stats = run_stage(name, config, args.overwrite)
        print(json.dumps({name: stats}, indent=2, default=str), flush=True)
    print(f"done: outputs in {config.output_dir}", file=sys.stderr, flush=True)
    return 0


def main(stage: str, argv: list[str] | None = None) -> None:
    """Exit with the CLI's exit codes and messages: our errors print one line, anything else one
    line naming a log file with the traceback (the CLI's `report_error`); `ray job stop`
    (SIGTERM) stops cleanly with 143 and a rerun continues."""
    from colorfilter import interrupts
    from colorfilter.cli import report_error

    interrupts.install()
    loaded: dict = {}
    try:
        code = run(stage, argv, loaded)
    except interrupts.Interrupted as stop:
        code = stop.exit_code
    except Exception as exc:  # noqa: BLE001 - reported as a line and an exit code
        stop = interrupts.find(exc)  # a stop request that a library wrapped
        code = stop.exit_code if stop is not None else report_error(exc, loaded.get("output_dir"))
    sys.exit(code)
