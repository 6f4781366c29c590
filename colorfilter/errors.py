"""Error types with exit codes, so the CLI can tell usage errors from data errors."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected error (a bug, or a crash in a worker)
EXIT_USAGE = 2  # bad command line, config or input location: fix and rerun
EXIT_BAD_DATA = 3  # unusable input (too many bad records, no usable chunk) or a damaged file
EXIT_NOT_IMPLEMENTED = 4  # a stage that this version does not provide yet
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): stopped cleanly, rerun the same command to continue
EXIT_TERMINATED = 143  # SIGTERM (spot reclaim, `ray job stop`): stopped cleanly, rerun continues


class ColorFilterError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = EXIT_FAILURE


class ConfigError(ColorFilterError):
    """A bad config file, override, or input location."""

    exit_code = EXIT_USAGE


class BadDataError(ColorFilterError):
    """Input data is unusable (e.g. more bad records than allowed)."""

    exit_code = EXIT_BAD_DATA


class DamagedDataError(BadDataError, ValueError):
    """A file or object is truncated or corrupt (parquet, safetensors, zstd, gzip, JSON): no
    retry can help. The message names the file as the user wrote it and what to rerun. Also a
    ValueError, so code that treats an unparsable record as absent still does."""


class ServiceError(ColorFilterError):
    """A service (bucket endpoint, hub, cluster) refuses or does not answer: one line naming
    the endpoint; fix the address, credentials or the service, then rerun to continue."""

    exit_code = EXIT_USAGE


class OutOfSpaceError(ColorFilterError):
    """A write failed for lack of space or quota, or over the file size limit (ENOSPC, EDQUOT,
    EFBIG): deterministic, so never retried."""

    exit_code = EXIT_USAGE


class OutputDirBusyError(ColorFilterError):
    """Another live run holds the output dir's lease (colorfilter.io.lease)."""

    exit_code = EXIT_USAGE


class MissingExtraError(ColorFilterError):
    """An optional dependency is not installed."""

    exit_code = EXIT_USAGE


class NotBuiltError(ColorFilterError):
    """A stage that exists in the CLI but is not implemented yet."""

    exit_code = EXIT_NOT_IMPLEMENTED


def require(module: str, extra: str | None = None):
    """Import `module` lazily, or raise an error that says what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'colorfilter[{extra}]'" if extra else f"pip install {module}"
        raise MissingExtraError(
            f"{module} is not installed ({exc}); install it with: {hint}"
        ) from exc
