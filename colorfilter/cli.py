"""The `colorfilter` command line. Heavy libraries load only inside the commands that need them."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from colorfilter import interrupts
from colorfilter.jobs import stage_module
from colorfilter.reporting import report_error, report_unexpected

if TYPE_CHECKING:
    from colorfilter.config import Config

app = typer.Typer(
    name="colorfilter",
    help="CoLoR-Filter data selection: score a candidate pool with a prior and a conditional "
    "LM and keep the top 1/tau. Exit codes: 0 ok, 1 unexpected failure, 2 usage/config error, "
    "3 unusable input data, 4 stage not available, 130/143 stopped by SIGINT/SIGTERM (rerun "
    "the same command to continue).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file (see configs/).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key: --set selection.tau=16 (repeatable)."),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace outputs made with a different config.")
]


_RUN = {"output_dir": None}  # where the loaded config writes: the home of an error's log file
JOB_DRIVER = "ray-job-driver"  # context.obj of `python -m pipelines.<stage>` (job_main)


# typer's own exits and usage errors; a typer that vendors click has classes of its own
_CLI_EXITS = (
    typer.Exit, typer.Abort, typer.BadParameter,
    click.exceptions.Exit, click.exceptions.Abort, click.ClickException,
)  # fmt: skip


def user_errors(command):
    """Turn every error into a message and an exit code, never a traceback on the terminal:
    ours (also when raised inside a Ray actor) print their one-line message; anything else
    prints one line and leaves its traceback in a log file (see `report_error`)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _RUN["output_dir"] = None
        try:
            return command(*args, **kwargs)
        except _CLI_EXITS:
            raise  # typer's own exits and usage errors
        except Exception as exc:  # noqa: BLE001 - every error ends here, as a line and a code
            stop = interrupts.find(exc)  # a stop request that a library wrapped (SIGTERM/INT)
            if stop is not None:
                raise stop from None
            raise typer.Exit(report_error(exc, _RUN["output_dir"])) from None

    return wrapper


def _load(config: Path, overrides: list[str] | None, job_driver: bool = False):
    from colorfilter.config import check_environment, load_config

    loaded = load_config(config, overrides or [])
    if job_driver:
        join_job_cluster(loaded)
    _RUN["output_dir"] = loaded.output_dir
    check_environment(loaded)
    return loaded


@contextlib.contextmanager
def output_lease(config: Config, command: str) -> Iterator[None]:
    """Hold output_dir's lease while a command writes there (one writer per output dir,
    colorfilter.io.lease); rank 0 only under torchrun, whose other ranks run inside it."""
    from colorfilter.io.lease import held
    from colorfilter.layout import RunLayout
    from colorfilter.pipeline.stages import is_main_process

    if not is_main_process():
        yield
        return
    with held(RunLayout.of(config).root, config.lease_ttl_s, f"colorfilter {command}"):
        yield


def join_job_cluster(config: Config) -> None:
    """A Ray job's driver joins the job's cluster: Ray sets RAY_ADDRESS for every job, so when it
    is set and the config names no `ray.address`, use "auto" instead of starting a second, local
    Ray (which would also fail on the `num_cpus` a demo config sets). Before check_environment:
    the driver of a GPU config need not have a GPU itself."""
    if config.ray.address is None and os.environ.get("RAY_ADDRESS"):
        config.ray.address = "auto"


def _stage_command(
    stage: str, config: Path, overrides: list[str] | None, overwrite: bool, job_driver: bool
) -> None:
    from colorfilter.pipeline.stages import is_main_process, run_stage

    resolved = _load(config, overrides, job_driver)
    with output_lease(resolved, stage):
        stats = run_stage(stage, resolved, overwrite)
    if not is_main_process():  # one copy of the stats under torchrun
        return
    if stage == "evaluate":  # the report's path and headline table, not its whole JSON
        from colorfilter.evaluation.report import summary
        from colorfilter.layout import RunLayout

        typer.echo(summary(RunLayout.of(resolved).eval))
        return
    typer.echo(json.dumps(stats, indent=2, default=str))


def _make_stage_command(stage: str, help_text: str) -> None:
    @app.command(name=stage, help=help_text)
    @user_errors
    def command(
        context: typer.Context,
        config: ConfigArg,
        set: SetOpt = None,
        overwrite: OverwriteOpt = False,
    ) -> None:
        _stage_command(stage, config, set, overwrite, context.obj == JOB_DRIVER)


_make_stage_command("prepare", "Tokenize and chunk the pool and downstream data into token shards.")
_make_stage_command("train-prior", "Pre-train the prior model on a random slice of the pool.")
_make_stage_command("train-conditional", "Fine-tune the prior on the downstream train data.")
_make_stage_command(
    "distill",
    "Cascade: score a sample with both models, distil a cheap scorer, cheap-score the pool.",
)
_make_stage_command("score", "Score every pool chunk with both models: prior_loss - cond_loss.")
_make_stage_command("select", "Select the top 1/tau of the pool and write the dataset.")
_make_stage_command("evaluate", "Train target models on selections and compare held-out loss.")


@app.command(
    help="Print the training plan of both models (micro-batch, per-GPU peak memory, steps, "
    "tokens, estimated time) without training."
)
@user_errors
def plan(
    config: ConfigArg,
    set: SetOpt = None,
    gpus: Annotated[int, typer.Option(help="Data-parallel GPUs (ranks).")] = 1,
    gpu_memory_gb: Annotated[
        float | None, typer.Option(help="Memory per GPU (default: *.gpu_memory_gb, else 80).")
    ] = None,
    vocab_size: Annotated[
        int | None, typer.Option(help="Vocabulary size, if the tokenizer is not local yet.")
    ] = None,
    device: Annotated[str, typer.Option(help="cuda or cpu.")] = "cuda",
    target_tokens: Annotated[
        int | None, typer.Option(help="Target train tokens, if not prepared yet (books: 25e6).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from colorfilter.models.plan import format_plan
    from colorfilter.pipeline.plan import build_plans, plans_json

    plans = build_plans(
        _load(config, set), gpus, gpu_memory_gb, vocab_size, device, target_tokens
    )
    typer.echo(plans_json(plans) if as_json else "\n".join(format_plan(p) for p in plans))


@app.command(
    help="Run the whole pipeline: prepare, train both models, score, select "
    "(evaluate too with --stages ...,evaluate)."
)
@user_errors
def run(
    context: typer.Context,
    config: ConfigArg,
    set: SetOpt = None,
    overwrite: OverwriteOpt = False,
    stages: Annotated[
        str | None, typer.Option(help="Comma-separated stages to run (default: all but evaluate).")
    ] = None,
) -> None:
    from colorfilter.pipeline.stages import run_stages, stage_names

    resolved = _load(config, set, context.obj == JOB_DRIVER)
    with output_lease(resolved, "run"):
        run_stages(stage_names(stages, resolved), resolved, overwrite)
    typer.echo(f"done: outputs in {resolved.output_dir}", err=True)


@app.command(help="Upload a selected dataset folder to the Hugging Face hub.")
@user_errors
def release(
    folder: Annotated[
        str, typer.Argument(help="A folder under OUTPUT/selected/ (a path, or an s3://, gs://, "
                            "hf:// URL).")
    ],
    repo_id: Annotated[str, typer.Option(help="Hub dataset repo, org/name.")],
    private: Annotated[bool, typer.Option(help="Create the repo as private.")] = False,
    dry_run: Annotated[bool, typer.Option(help="List what would be uploaded.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to commit to.")] = None,
) -> None:
    from colorfilter.release import format_release
    from colorfilter.release import release as do_release

    result = do_release(folder, repo_id, private=private, dry_run=dry_run, revision=revision)
    typer.echo(format_release(result))


@app.command(
    help="Export a selected dataset folder for a trainer: OLMo-core token files (--format olmo) "
    "or a Megatron-LM indexed dataset (--format megatron), resumable per shard."
)
@user_errors
def export(
    selection: Annotated[
        str, typer.Argument(help="A folder under OUTPUT/selected/ (a path or an s3://, gs://, "
                            "hf:// URL).")
    ],
    out: Annotated[str, typer.Argument(help="Export folder (a path or a bucket URL).")],
    format: Annotated[str, typer.Option("--format", help="olmo or megatron.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an export of something else in OUT.")
    ] = False,
    vocab_size: Annotated[
        int | None, typer.Option(help="Vocabulary size, when the run's tokenizer is not at hand.")
    ] = None,
) -> None:
    from colorfilter.export.driver import ExportRequest, export_selection

    request = ExportRequest(selection, out, format, overwrite, vocab_size)
    typer.echo(json.dumps(export_selection(request), indent=2))


AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address", help="Ray dashboard address, http://HEAD:8265 (default $RAY_ADDRESS)."
    ),
]


def _env_pairs(pairs: list[str] | None) -> dict[str, str]:
    env = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


@app.command(help="Submit a pipeline run (or one stage) to a Ray cluster through the Ray Jobs API.")
@user_errors
def submit(
    config: ConfigArg,
    address: AddressOpt = None,
    set: SetOpt = None,
    stage: Annotated[str, typer.Option(help="'run' (all stages) or one stage name.")] = "run",
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return after submitting.")] = False,
    working_dir: Annotated[Path, typer.Option(help="Directory shipped to the cluster.")] = Path(
        "."
    ),
    env: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE for the job (repeatable).")
    ] = None,
    pip: Annotated[
        list[str] | None, typer.Option(help="Package or requirements.txt to install per job.")
    ] = None,
    python: Annotated[
        str | None, typer.Option(help="Existing interpreter on the cluster nodes.")
    ] = None,
    entrypoint_num_gpus: Annotated[float, typer.Option(help="GPUs reserved for the driver.")] = 0,
    entrypoint_num_cpus: Annotated[
        float | None, typer.Option(help="CPUs reserved for the driver.")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    from colorfilter.jobs import JobRequest
    from colorfilter.jobs import submit as submit_job

    pip_arg = pip[0] if pip and len(pip) == 1 and pip[0].endswith(".txt") else pip
    request = JobRequest(
        config, address, tuple(set or []), stage=stage, working_dir=working_dir,
        env_vars=_env_pairs(env), pip=pip_arg, python=python, overwrite=overwrite,
        entrypoint_num_gpus=entrypoint_num_gpus, entrypoint_num_cpus=entrypoint_num_cpus,
    )  # fmt: skip
    job_id = submit_job(request, no_wait=no_wait, echo=lambda line: typer.echo(line, err=True))
    typer.echo(job_id)


ConnectTimeoutOpt = Annotated[
    float,
    typer.Option("--connect-timeout", help="Seconds to wait for the dashboard to answer."),
]

jobs_app = typer.Typer(
    help="Inspect or stop jobs submitted with `colorfilter submit`.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")
JobIdArg = Annotated[str, typer.Argument(help="Job id (raysubmit_...).")]


@jobs_app.command("status", help="Status, message and times of a job, as JSON.")
@user_errors
def jobs_status(
    job_id: JobIdArg, address: AddressOpt = None, connect_timeout: ConnectTimeoutOpt = 30.0
) -> None:
    from colorfilter.jobs import job_status

    status = job_status(address, job_id, connect_timeout_s=connect_timeout)
    typer.echo(json.dumps(status, indent=2, default=str))


@jobs_app.command("logs", help="A job's logs so far; --follow streams them until it ends.")
@user_errors
def jobs_logs(
    job_id: JobIdArg,
    address: AddressOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends.")
    ] = False,
    connect_timeout: ConnectTimeoutOpt = 30.0,
) -> None:
    from colorfilter.jobs import follow_logs, job_logs

    if follow:
        status = follow_logs(address, job_id, echo=lambda line: typer.echo(line, err=True),
                             connect_timeout_s=connect_timeout)
        typer.echo(f"job {job_id}: {status}", err=True)
        raise typer.Exit(0 if status == "SUCCEEDED" else 1)
    typer.echo(job_logs(address, job_id, connect_timeout_s=connect_timeout), nl=False)


@jobs_app.command("stop", help="Stop a running job; prints its status afterwards.")
@user_errors
def jobs_stop(
    job_id: JobIdArg, address: AddressOpt = None, connect_timeout: ConnectTimeoutOpt = 30.0
) -> None:
    from colorfilter.jobs import stop_job

    typer.echo(stop_job(address, job_id, connect_timeout_s=connect_timeout))


def main(command: Callable[[], Any] = app) -> None:
    """Run the CLI (or one of its commands, see `job_main`) with its exit codes."""
    interrupts.install()  # SIGTERM/SIGINT: stop cleanly, exit 143/130
    try:
        command()
    except interrupts.Interrupted as stop:
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # an unexpected failure outside a command: one line and a log
        stop = interrupts.find(exc)  # unless a library wrapped our stop request
        if stop is not None:
            sys.exit(stop.exit_code)
        sys.exit(report_unexpected(exc, _RUN["output_dir"]))


def job_main(stage: str, argv: list[str] | None = None) -> None:
    """`python -m pipelines.<stage>`, a Ray job's driver: `colorfilter <stage>` itself (its
    options, help, output, messages and exit codes; `run` for the whole pipeline), except that
    inside a Ray job it joins the job's cluster (`join_job_cluster`)."""
    command = typer.main.get_command(app).commands[stage]
    prog_name = f"python -m {stage_module(stage)}"
    main(functools.partial(command.main, args=argv, prog_name=prog_name, obj=JOB_DRIVER))
