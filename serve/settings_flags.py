"""argparse flags generated from the fields of a settings dataclass.

A field's default and help text live only on the field; its flag restates neither (vLLM builds
its CLI from its documented engine-arg fields the same way). Field `max_in_flight` becomes
`--max-in-flight`, parsed into `args.max_in_flight`; its type comes from the annotation:
`X | None` takes an X, `bool` is a switch, `Literal[...]` gives the choices. The field's
metadata holds:

- `help` (required): what the setting does, without its default (the help adds that);
- `flag` (optional): the flag's name when it is not the field's (`--drain-timeout` for
  `drain_timeout_s`);
- `default_text` (optional): what the default means in words, e.g. "the model's" for a None.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

METADATA_KEYS = ("help", "flag", "default_text")
_SCALARS = (int, float, str, Path)
_METAVARS = {int: "N", float: "X"}


@dataclass(frozen=True)
class Flag:
    """The flag of one dataclass field: its name and the arguments of `add_argument`."""

    field: str
    name: str
    kwargs: dict[str, Any]


def flags_of(cls: type, *, exclude: Collection[str] = ()) -> list[Flag]:
    """The flag of every field of dataclass `cls` except those in `exclude`, in field order.

    Raises `TypeError` for a field without help text, without a default, or of a type no flag
    can take, and `ValueError` if `exclude` names a field `cls` does not have.
    """
    fields = [f for f in dataclasses.fields(cls) if f.init]
    stale = sorted(set(exclude) - {f.name for f in fields})
    if stale:
        raise ValueError(f"{cls.__name__} has no field {', '.join(stale)} to exclude")
    hints = get_type_hints(cls)
    return [_flag(f, hints[f.name], f"{cls.__name__}.{f.name}")
            for f in fields if f.name not in exclude]


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """Register `flags` on `parser`."""
    for flag in flags:
        parser.add_argument(flag.name, **flag.kwargs)


def flag_values(args: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    """The parsed value of each flag, keyed by field name (keyword arguments for the class)."""
    return {flag.field: getattr(args, flag.field) for flag in flags}


def _flag(field: dataclasses.Field, hint: Any, where: str) -> Flag:
    meta = dict(field.metadata)
    stray = sorted(set(meta) - set(METADATA_KEYS))
    if stray:
        raise TypeError(f"{where}: unknown flag metadata {', '.join(stray)}; "
                        f"valid keys: {', '.join(METADATA_KEYS)}")
    text = str(meta.get("help", "")).strip()
    if not text:
        raise TypeError(f"{where} has no help text: give it metadata={{'help': ...}}, or write "
                        "its flag by hand and exclude it")
    if field.default is dataclasses.MISSING:
        raise TypeError(f"{where} has no default; a generated flag needs one")
    name = meta.get("flag") or "--" + field.name.replace("_", "-")
    kwargs: dict[str, Any] = {"dest": field.name, "default": field.default}
    hint = _without_none(hint, where)
    if hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if field.default else "store_true"
        shown = meta.get("default_text")
    else:
        if get_origin(hint) is Literal:
            kwargs["choices"] = get_args(hint)
            kwargs["type"] = type(kwargs["choices"][0])
        elif hint in _SCALARS:
            kwargs["type"] = hint
            kwargs["metavar"] = _METAVARS.get(hint) or field.name.upper()
        else:
            raise TypeError(f"{where}: no flag for type {hint!r}; write its flag by hand")
        shown = meta.get("default_text", field.default)
    if shown is not None:
        text = f"{text} (default: {_show(shown)})"
    kwargs["help"] = text.replace("%", "%%")  # argparse %-formats help strings
    return Flag(field.name, name, kwargs)


def _without_none(hint: Any, where: str) -> Any:
    """`X` for `X | None` (the flag takes an X; None is only ever the default)."""
    if get_origin(hint) not in (Union, types.UnionType):
        return hint
    rest = [arg for arg in get_args(hint) if arg is not type(None)]
    if len(rest) != 1:
        raise TypeError(f"{where}: no flag for the union {hint!r}; write its flag by hand")
    return rest[0]


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
