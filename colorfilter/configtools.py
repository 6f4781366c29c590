"""Typed dataclass configs from YAML, with dotted `--set` overrides and clear errors.

Standard library and PyYAML only: the CLI imports this at start-up.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from colorfilter.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from a plain dict, checking keys and value types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = _without_removed_keys(cls, data, where)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(_unknown_key_message(where, unknown[0], list(fields), cls))
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, _join(where, name))
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def _without_removed_keys(cls: type, data: dict, where: str) -> dict:
    """Drop keys an older version had and this one ignores (a saved config.yaml of an earlier
    run still loads), saying so on stderr; `--set` of such a key is an error instead."""
    removed = getattr(cls, "REMOVED_KEYS", {})
    for key in [k for k in data if k in removed]:
        note = f"warning: ignoring config key '{_join(where, key)}': {removed[key]}"
        print(note, file=sys.stderr)
    return {k: v for k, v in data.items() if k not in removed}


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _unknown_key_message(where: str, key: str, valid: list[str], cls: Any = None) -> str:
    renamed = getattr(cls, "RENAMED_KEYS", {}).get(key)  # a ClassVar of the section's dataclass
    if renamed:
        return f"config key '{_join(where, key)}' was replaced: use {renamed}"
    removed = getattr(cls, "REMOVED_KEYS", {}).get(key)
    if removed:
        return f"config key '{_join(where, key)}' was removed: {removed}; delete it"
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{_join(where, close[0])}'?" if close else ""
    return (
        f"unknown config key '{_join(where, key)}'.{hint} "
        f"Valid keys{' under ' + where if where else ''}: {', '.join(sorted(valid))}"
    )


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against type `tp`; convert only where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: no type fits {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # `--set data.pool=a.jsonl` or `selection.tau=16`: a one-item list
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp) or (Any,)
        return [_coerce(item_type, item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:
        item_types = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
            raise ConfigError(
                f"{where}: expected a list of {len(item_types)} values, got {value!r}"
            )
        return tuple(
            _coerce(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(item_types, value))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, value_type = typing.get_args(tp) or (str, Any)
        return {str(k): _coerce(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{where}: {value!r} is not one of {allowed}")
        return value
    return _coerce_scalar(tp, value, where)


def _coerce_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. `--set model.revision=2024`
    else:
        raise ConfigError(f"{where}: unsupported config type {tp}")
    hint = ""
    if tp is str and isinstance(value, dict) and len(value) == 1:
        key, inner = next(iter(value.items()))
        quoted = f"{key}:" if inner is None else f"{key}: {inner}"
        hint = f' (YAML read an unquoted colon as a mapping; quote the value: "{quoted}")'
    raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}{hint}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value`; the value is YAML (`16`, `true`, `[a, b]`, `null`)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set: bad key '{key}'")
    if not raw.strip():  # `--set data.pool=` would silently mean "" (the current directory)
        raise ConfigError(
            f"--set {key}= has no value; give one (null or [] to clear a key, '' for an empty "
            "string)"
        )
    try:
        value = yaml.load(raw, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {_yaml_problem(exc)}") from exc
    return parts, value


def apply_override(cls: type, data: dict, parts: list[str], value: Any) -> None:
    """Set a dotted key in the raw dict, refusing keys the dataclass schema does not have."""
    node, node_cls, where = data, cls, ""
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node_cls)}
        if part not in fields:
            raise ConfigError(_unknown_key_message(where, part, list(fields), node_cls))
        where = _join(where, part)
        if i == len(parts) - 1:
            node[part] = value
            return
        field_type = _dataclass_type(typing.get_type_hints(node_cls)[part])
        if field_type is None:
            raise ConfigError(f"--set {'.'.join(parts)}: '{where}' is not a section")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(parts)}: '{where}' is not a mapping")
        node_cls = field_type


def _dataclass_type(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are meant to be overridden
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"key '{key}' on line {line} is already set on line {first_line}")
        self.key, self.first_line, self.line = key, first_line, line


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with one-line errors that name the file (and the line)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; give a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a YAML config (not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}); is this a data file?"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: duplicate key: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}"
        )
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML's own text spans lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def to_dict(config: Any) -> dict:
    """A dataclass as plain, YAML-safe data (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)


# Settings that change how a stage runs or reports, never what it writes: left out of every hash
# of a stage's result (a model's config hash) and of the "output dir made with another config"
# and --overwrite checks. A bare name counts in every section, `section.name` in that one only.
RUNTIME_KEYS = frozenset({
    "compile", "checkpoint_every", "keep_checkpoint", "eval_every", "eval_batch_size",
    "torch_threads", "progress", "micro_batch_size", "gpu_memory_gb",
    "split_bytes",  # prepare's parts: the same shards however a file is split
    "num_workers", "worker_cpus", "worker_gpus", "workers",  # actors and their resources
    "prior.eval_max_chunks", "conditional.eval_max_chunks",  # the held-out loss they report
})  # fmt: skip


def is_runtime(section: str, key: str) -> bool:
    """Whether `section.key` is a RUNTIME_KEYS setting."""
    return key in RUNTIME_KEYS or f"{section}.{key}" in RUNTIME_KEYS


URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class Checks:
    """Collects config problems of one section as one line each: `key must be ..., got value`.

    Each section's `validate()` returns `Checks(...).problems`, so a load reports every problem
    of a config at once.
    """

    def __init__(self, where: str = ""):
        self.where = where
        self.problems: list[str] = []

    def key(self, name: str) -> str:
        return _join(self.where, name)

    def add(self, name: str, message: str) -> None:
        self.problems.append(f"{self.key(name)} {message}")

    def at_least(self, name: str, value: float | None, low: float) -> None:
        """An integer or finite number >= low (NaN and infinity are refused)."""
        if value is None or not _finite(value) or value < low:
            self.add(name, f"must be >= {low:g}, got {value!r}")

    def positive(self, name: str, value: float) -> None:
        if not _finite(value) or value <= 0:
            self.add(name, f"must be a finite number > 0, got {value!r}")

    def within(self, name: str, value: float, low: float, high: float) -> None:
        if not _finite(value) or not low <= value <= high:
            self.add(name, f"must be within [{low:g}, {high:g}], got {value!r}")

    def one_of(self, name: str, value: Any, choices: typing.Iterable[Any]) -> None:
        choices = list(choices)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            allowed = ", ".join(str(c) for c in choices)
            self.add(name, f"must be one of {allowed}; got {value!r}{hint}")

    def names(self, name: str, values: list[str], choices: typing.Iterable[str]) -> None:
        """A non-empty list of distinct names from a fixed set."""
        if not values:
            self.add(name, "must name at least one entry, got []")
        for i, value in enumerate(values):
            self.one_of(f"{name}[{i}]", value, choices)
        if len(set(values)) != len(values):
            self.add(name, f"names an entry twice: {values}")

    def non_empty(self, name: str, value: str | None) -> None:
        if value is not None and not value.strip():
            self.add(name, f"must not be empty, got {value!r}")

    def paths(
        self, name: str, values: list[str], allow_hf: bool = True, schemes: Iterable[str] = ()
    ) -> None:
        """Paths or globs: no empty entry; URLs only of `schemes` (plus hf:// when `allow_hf`)."""
        for i, value in enumerate(values):
            self.path(f"{name}[{i}]", value, allow_hf, schemes)

    def path(
        self, name: str, value: str, allow_hf: bool = False, schemes: Iterable[str] = ()
    ) -> None:
        """A local path, or a URL of one of `schemes` (the storage layer's, for inputs)."""
        if not value.strip():
            self.add(name, f"must be a path, got {value!r} (an empty path means the current dir)")
            return
        match = URL_SCHEME.match(value)
        allowed = set(schemes) | ({"hf"} if allow_hf else set())
        if match and match.group(1).lower() not in allowed:
            where = (f"this key takes local paths and {', '.join(sorted(allowed))}:// URLs"
                     if allowed else "this key takes a local path")
            self.add(name, f"= {value!r}: {match.group(1)}:// is not supported: {where}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def raise_problems(problems: list[str]) -> None:
    """One ConfigError for all problems: one line each."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} config problems:\n  " + "\n  ".join(problems))
