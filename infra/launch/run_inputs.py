"""Which local files a run config reads, so a launcher can ship them to remote workers.

Inputs are the dataset files of every data source and a local model/tokenizer folder. Only
relative paths that exist here are shipped (they resolve the same way in the remote working
directory); hub ids (``org/name``, ``hf://...``) and ``gs://`` paths are read remotely as they
are. Absolute local paths cannot be mirrored and are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

logger = logging.getLogger(__name__)

_REMOTE_PREFIXES = ("gs://", "hf://", "s3://", "http://", "https://")


class RunInputError(ValueError):
    """A run config reads a local file that remote workers cannot get."""


@dataclass(frozen=True)
class RunInputs:
    """Relative local paths (files or folders) the run reads."""

    files: tuple[str, ...]
    folders: tuple[str, ...]


def _candidate_paths(raw: Mapping[str, Any]) -> list[str]:
    paths: list[str] = []
    model = raw.get("model") or {}
    paths += [model[k] for k in ("path", "tokenizer") if isinstance(model.get(k), str)]
    data = raw.get("data") or {}
    for source in data.get("sources") or ():
        dataset = (source or {}).get("dataset") or {}
        paths += [dataset[k] for k in ("train_file", "val_file") if isinstance(dataset.get(k),
                                                                               str)]
    return paths


def collect_run_inputs(raw: Mapping[str, Any], base_dir: str | Path = ".") -> RunInputs:
    """The relative local inputs of the raw run config `raw`, resolved against `base_dir`."""
    files: list[str] = []
    folders: list[str] = []
    for text in _candidate_paths(raw):
        if text.startswith(_REMOTE_PREFIXES):
            continue
        local = Path(base_dir) / text
        if Path(text).is_absolute():
            if Path(text).exists():
                raise RunInputError(f"the run reads the absolute local path {text}, which the "
                                    "workers do not have: use a path relative to the current "
                                    "directory (it is copied) or a gs:// path")
            continue
        if ".." in PurePosixPath(text).parts:
            raise RunInputError(f"input path {text} leaves the current directory; use a path "
                                "below it so it can be mirrored on the workers")
        if local.is_file():
            files.append(text)
        elif local.is_dir():
            folders.append(text)
        else:
            # Not here: a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct, fetched remotely.
            logger.debug("input %s is not a local path; left for the workers to resolve", text)
    return RunInputs(tuple(dict.fromkeys(files)), tuple(dict.fromkeys(folders)))
