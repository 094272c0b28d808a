"""Read a run config (YAML file + ``key=value`` overrides) the way the launchers need it.

The launchers only need the resolved mapping to ship it to the workers and to fail early on
a missing file or a malformed override. When the typed loader of `train_jax.config` is
installed it also validates the result, so a typo costs an error here, not a TPU hour.
"""

from __future__ import annotations

import copy
import importlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

_NUMBER_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class RunConfigError(ValueError):
    """The run config file or an override cannot be used."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], value); the value is parsed as YAML (1e-5 -> float)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise RunConfigError(f"override {text!r} must look like key=value or section.key=value")
    if _NUMBER_RE.match(raw):
        # PyYAML follows YAML 1.1, where "3e-5" (no dot) is a string; people mean a float.
        return key.split("."), float(raw) if any(c in raw for c in ".eE") else int(raw)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise RunConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.split("."), value


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Return the mapping in the YAML file at `path` with `overrides` applied."""
    path = Path(path)
    if not path.is_file():
        raise RunConfigError(f"run config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RunConfigError(f"run config {path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RunConfigError(f"run config {path} must be a mapping at the top level")
    resolved = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = resolved
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                prefix = ".".join(keys[: depth + 1])
                raise RunConfigError(f"override {text!r}: {prefix} is a value, not a section")
            node = child
        node[keys[-1]] = value
    _validate_with_typed_loader(path, overrides)
    return resolved


def _validate_with_typed_loader(path: Path, overrides: Sequence[str]) -> None:
    """Run the training config loader, if this install has it, for its error messages."""
    try:
        config_module = importlib.import_module("train_jax.config")
    except ModuleNotFoundError:
        logger.debug("train_jax.config is not installed; config validated as plain YAML only")
        return
    loader = getattr(config_module, "load_run_config", None)
    if loader is None:
        logger.debug("train_jax.config has no load_run_config; plain YAML only")
        return
    loader(path, list(overrides))
