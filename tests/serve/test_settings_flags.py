"""Flags generated from a documented settings dataclass (`serve.settings_flags`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from serve.settings_flags import add_flags, flag_values, flags_of


@dataclass(frozen=True)
class Toy:
    path: str
    workers: int = field(default=4, metadata={"help": "worker processes"})
    ratio: float = field(default=0.5, metadata={"help": "share of 100% to use"})
    limit: int | None = field(default=None, metadata={"help": "cap", "default_text": "none"})
    mode: Literal["fast", "safe"] = field(default="safe", metadata={"help": "how to run"})
    verbose: bool = field(default=False, metadata={"help": "say more"})
    cache: bool = field(default=True, metadata={"help": "keep a cache"})
    timeout_s: float = field(default=30.0, metadata={"help": "seconds", "flag": "--timeout"})


def toy_parser() -> tuple[argparse.ArgumentParser, list]:
    flags = flags_of(Toy, exclude=("path",))
    parser = argparse.ArgumentParser()
    add_flags(parser, flags)
    return parser, flags


def test_fields_become_typed_flags():
    parser, flags = toy_parser()
    assert [f.name for f in flags] == ["--workers", "--ratio", "--limit", "--mode", "--verbose",
                                       "--cache", "--timeout"]
    args = parser.parse_args(["--workers", "2", "--limit", "9", "--mode", "fast", "--verbose",
                              "--no-cache", "--timeout", "1.5"])
    assert flag_values(args, flags) == {"workers": 2, "ratio": 0.5, "limit": 9, "mode": "fast",
                                        "verbose": True, "cache": False, "timeout_s": 1.5}
    assert Toy(path="p", **flag_values(args, flags)).timeout_s == 1.5
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "slow"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--workers", "two"])


def test_help_shows_the_field_default():
    parser, _ = toy_parser()
    text = " ".join(parser.format_help().split())
    assert "worker processes (default: 4)" in text
    assert "share of 100% to use (default: 0.5)" in text
    assert "cap (default: none)" in text
    assert "seconds (default: 30)" in text
    assert "--workers N" in text and "--ratio X" in text


def test_a_field_without_help_or_default_is_an_error():
    @dataclass
    class Undocumented:
        documented: int = field(default=1, metadata={"help": "fine"})
        bare: int = 2

    with pytest.raises(TypeError, match="Undocumented.bare has no help text"):
        flags_of(Undocumented)
    with pytest.raises(TypeError, match="Toy.path has no help text"):
        flags_of(Toy)


def test_bad_metadata_types_and_exclusions_are_errors():
    @dataclass
    class Typo:
        x: int = field(default=1, metadata={"hlep": "typo"})

    @dataclass
    class Listy:
        xs: list[int] = field(default_factory=list, metadata={"help": "many"})

    @dataclass
    class Pair:
        xy: tuple[int, int] = field(default=(1, 2), metadata={"help": "a point"})

    with pytest.raises(TypeError, match="unknown flag metadata hlep"):
        flags_of(Typo)
    with pytest.raises(TypeError, match="no default"):
        flags_of(Listy)
    with pytest.raises(TypeError, match="no flag for type"):
        flags_of(Pair)
    with pytest.raises(ValueError, match="no field nope"):
        flags_of(Toy, exclude=("path", "nope"))
