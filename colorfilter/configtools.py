"""Typed dataclass configs from YAML, with dotted `--set` overrides and clear errors.

Standard library and PyYAML only: the CLI imports this at start-up.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
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


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _unknown_key_message(where: str, key: str, valid: list[str], cls: Any = None) -> str:
    renamed = getattr(cls, "RENAMED_KEYS", {}).get(key)  # a ClassVar of the section's dataclass
    if renamed:
        return f"config key '{_join(where, key)}' was replaced: use {renamed}"
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
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from exc
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


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


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


def stable_hash(payload: Any) -> str:
    """sha256 of the canonical JSON of `payload` (dataclasses allowed): a config fingerprint."""
    if dataclasses.is_dataclass(payload):
        payload = dataclasses.asdict(payload)
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
