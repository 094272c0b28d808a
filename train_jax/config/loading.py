"""Typed construction of frozen dataclass configs from YAML mappings and ``key=value`` overrides.

`build(cls, mapping, section)` walks the dataclass fields with their type hints, converts and
checks every value, and raises `ConfigError` naming the offending dotted key (and the valid
keys when a key is unknown). Nothing here knows about training: it works for any dataclass.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
_NUMBER_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the key to fix."""


def _join(section: str, key: str | int) -> str:
    return f"{section}.{key}" if section else str(key)


def build(cls: type[T], values: Any, section: str = "") -> T:
    """Construct dataclass `cls` from `values`, converting and checking each field's type."""
    where = section or "config"
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__} {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        keys = ", ".join(_join(section, k) for k in unknown)
        raise ConfigError(f"unknown key {keys}; valid keys in {where}: {', '.join(fields)}")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = _join(section, name)
        if name in values:
            kwargs[name] = convert(hints[name], values[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def convert(hint: Any, value: Any, key: str) -> Any:
    """Convert `value` to the type `hint` (as written on a dataclass field) or raise."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{key}: {value!r} matches none of {_type_name(hint)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(args[0], v, _join(key, i)) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}")
        return tuple(convert(a, v, _join(key, i)) for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping, typing.Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return copy.deepcopy(dict(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], value); the value is parsed as YAML (3e-5 -> float)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like key=value or section.key=value")
    if _NUMBER_RE.match(raw):
        # PyYAML follows YAML 1.1, where "3e-5" (no dot) is a string; people mean a number.
        return key.split("."), float(raw) if any(c in raw for c in ".eE") else int(raw)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.split("."), value


def apply_override(tree: dict[str, Any], keys: Sequence[str], value: Any, text: str) -> None:
    """Set `keys` (a dotted path; list items by index) in the nested mapping `tree`."""
    node: Any = tree
    for depth, key in enumerate(keys[:-1]):
        prefix = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            node = node[_index(node, key, prefix, text)]
            continue
        child = node.setdefault(key, {})
        if child is None:
            child = node[key] = {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"override {text!r}: {prefix} is a value, not a section")
        node = child
    last = keys[-1]
    if isinstance(node, list):
        node[_index(node, last, ".".join(keys), text)] = value
    else:
        node[last] = value


def _index(items: list, key: str, prefix: str, text: str) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise ConfigError(f"override {text!r}: {prefix} is not an index of a {len(items)}-item list")
    return int(key)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file -> {})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def to_plain(obj: Any) -> Any:
    """Dataclasses/tuples/mappings -> plain dicts/lists (YAML- and JSON-serialisable)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
