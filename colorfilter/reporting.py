"""Errors as the user sees them: one line and an exit code, never a traceback on the terminal.

Ours (`colorfilter.errors`, also when raised inside a Ray actor) print their message; anything
else prints one line naming a log file (OUTPUT/logs/, on a bucket too, or the temp dir) that
holds the redacted traceback. Used by the CLI and the job entry points (colorfilter.cli).
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from colorfilter.errors import EXIT_FAILURE, ColorFilterError, OutOfSpaceError
from colorfilter.io import storage
from colorfilter.io.faults import out_of_space, service_failure
from colorfilter.io.redact import redact
from colorfilter.layout import RunLayout


def report_error(exc: BaseException, output_dir: str | None = None) -> int:
    """Print `exc` for the user and return the exit code: ours as they are; a service (bucket
    endpoint, hub, cluster) that refused or did not answer as one line naming the endpoint
    (exit 2); anything else as an unexpected failure with its traceback in a log file."""
    ours = find_user_error(exc) or service_failure(exc) or _out_of_space(exc, output_dir)
    if ours is None:
        return report_unexpected(exc, output_dir)
    typer.echo(f"error: {ours}", err=True)
    return ours.exit_code


def _out_of_space(exc: BaseException, output_dir: str | None) -> ColorFilterError | None:
    """A write that failed for lack of space, quota or file size, in a writer that did not
    name its file: one line (exit 2), never a traceback to read."""
    reason = out_of_space(exc)
    if reason is None:
        return None
    where = f" under {output_dir}" if output_dir else ""
    return OutOfSpaceError(redact(
        f"a write{where} failed ({reason}: {str(exc).strip()[:200]}); free space (or raise the "
        "quota or file size limit) and rerun the same command to continue"
    ))


def report_unexpected(exc: BaseException, output_dir: str | None = None) -> int:
    """A bug or a crash: one line on stderr naming a log file that holds the full traceback
    (OUTPUT/logs/error-<time>.log, or the temp dir when output_dir is unusable); exit code 1."""
    import os
    import tempfile
    import time
    import traceback

    text = redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    homes = [_log_home(output_dir)] if output_dir else []
    log = None
    for home in [*homes, Path(tempfile.gettempdir()) / "colorfilter-logs"]:
        try:
            if home is None:
                continue
            storage.makedirs(home)
            target = home.join(name) if isinstance(home, storage.Location) else home / name
            storage.write_text(target, text)
            log = target
            break
        except (OSError, ValueError):
            continue
    original = getattr(exc, "cause", None)  # a Ray task error: the remote exception
    original = original if isinstance(original, BaseException) else exc
    lines = str(original).strip().splitlines()
    summary = redact(f"{type(original).__name__}: {lines[-1] if lines else ''}")[:300]
    if log is None:
        typer.echo(text, err=True)
    else:
        typer.echo(f"error: unexpected failure ({summary}); full traceback in {log}", err=True)
    return EXIT_FAILURE


def _log_home(output_dir: str):
    """OUTPUT/logs as a Location (local or on a bucket), or None when output_dir is unusable."""
    try:
        return RunLayout.at(output_dir).logs
    except (ColorFilterError, ValueError):
        return None


def find_user_error(exc: BaseException) -> ColorFilterError | None:
    """Our error behind `exc`, if any: through `raise ... from`, Ray task errors (`.cause`), and
    actors that died in their constructor (whose error survives only as text)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)  # RayTaskError(ConfigError) is also a ConfigError,
        if isinstance(cause, BaseException) and cause is not exc:  # but its str is the stack
            exc = cause
            continue
        if isinstance(exc, ColorFilterError):
            return exc
        ours = _error_from_actor_text(exc)
        if ours is not None:
            return ours
        exc = exc.__cause__
    return None


_REMOTE_ERROR = re.compile(r"^(colorfilter(?:\.\w+)*)\.(\w+): (.*)$", re.MULTILINE)


def _error_from_actor_text(exc: BaseException) -> ColorFilterError | None:
    """An actor whose __init__ raised our error dies with an ActorDiedError holding only the
    remote traceback as text; its last `colorfilter.errors.ConfigError: msg` line is the error."""
    if not type(exc).__module__.startswith("ray"):
        return None
    text = str(exc)
    matches = list(_REMOTE_ERROR.finditer(text))
    if not matches:
        return None
    module_name, class_name = matches[-1].group(1, 2)
    message = text[matches[-1].start(3) :]  # to the end: a message may span lines
    import importlib

    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return None
    if not (isinstance(cls, type) and issubclass(cls, ColorFilterError)):
        return None
    error = ColorFilterError(message.strip())
    error.exit_code = cls.exit_code
    return error
