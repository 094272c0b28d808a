"""Expanding `--grid key=v1,v2 ...` into trials (the cartesian product, in a stable order)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

# Short names users type for the most swept keys.
ALIASES = {
    "lr": "optimizer.learning_rate",
    "learning_rate": "optimizer.learning_rate",
    "steps": "train.steps",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "warmup": "optimizer.warmup_steps",
    "weight_decay": "optimizer.weight_decay",
    "lora_rank": "method.lora.rank",
}


class GridError(ValueError):
    """A `--grid` item is malformed."""


@dataclass(frozen=True)
class Trial:
    """One point of the grid: its index, a readable name and the overrides it applies."""

    index: int
    overrides: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        """A folder-safe name such as ``t03_optimizer.learning_rate-3e-05``."""
        parts = [f"{key.split('.')[-1]}-{value}" for key, value in self.overrides]
        slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(parts))
        return f"t{self.index:02d}_{slug}"[:120]

    def override_args(self) -> list[str]:
        """The overrides as ``key=value`` arguments of `jaxtune train`."""
        return [f"{key}={value}" for key, value in self.overrides]


def parse_grid(items: Sequence[str]) -> list[Trial]:
    """Trials for grid items like ``lr=1e-5,3e-5`` and ``train.steps=100,200``."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise GridError(f"grid item {item!r} must look like key=value1,value2")
        choices = [v.strip() for v in values.split(",")]
        if any(not v for v in choices):
            raise GridError(f"grid item {item!r} has an empty value")
        full_key = ALIASES.get(key, key)
        if any(full_key == existing for existing, _ in axes):
            raise GridError(f"grid key {full_key!r} given twice")
        axes.append((full_key, choices))
    if not axes:
        raise GridError("--grid needs at least one key=value1,value2 item")
    keys = [key for key, _ in axes]
    return [Trial(i, tuple(zip(keys, combo)))
            for i, combo in enumerate(itertools.product(*(values for _, values in axes)))]
