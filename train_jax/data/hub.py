"""Hugging Face hub datasets as input files (``hf://owner/name[@split]``), for online users."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf://"


def is_hub_spec(spec: str) -> bool:
    """True for ``hf://owner/name[@split]`` data specs."""
    return spec.startswith(HUB_PREFIX)


def parse_hub_spec(spec: str) -> tuple[str, str]:
    """``hf://owner/name@split`` -> (``owner/name``, ``split``); the split defaults to train."""
    body = spec[len(HUB_PREFIX):]
    name, _, split = body.partition("@")
    if not name:
        raise ValueError(f"bad hub dataset spec {spec!r}; expected hf://owner/name[@split]")
    return name, split or "train"


def materialize_hub_dataset(spec: str, out_file: Path) -> Path:
    """Download a hub dataset split (needs network) and write it as JSONL to `out_file`."""
    from datasets import load_dataset

    name, split = parse_hub_spec(spec)
    logger.info("loading %s split %s from the Hugging Face hub", name, split)
    dataset = load_dataset(name, split=split)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in dataset)
    return out_file
