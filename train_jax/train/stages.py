"""Sequential training stages: stage k+1 starts from stage k's final checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from train_jax.config.run_config import merge_stage, run_config_from_dict
from train_jax.train.loop import CHECKPOINT_DIR, RunResult, train

logger = logging.getLogger(__name__)


def stage_configs(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Raw configs of every stage, chained through their run directories."""
    stages = list(raw.get("stages") or [])
    if not stages:
        return [dict(raw)]
    root = Path(str(raw.get("run_dir", "runs/default")))
    out: list[dict[str, Any]] = []
    for index, stage in enumerate(stages):
        tree = merge_stage(raw, stage)
        tree["run_dir"] = str(root / f"stage-{index + 1}")
        if index > 0:
            previous = Path(out[-1]["run_dir"]) / CHECKPOINT_DIR
            tree["model"] = {**dict(tree.get("model") or {}), "path": str(previous),
                             "architecture": None, "tokenizer": None}
        out.append(tree)
    return out


def run_stages(raw: Mapping[str, Any]) -> RunResult:
    """Train every stage in order (each resumes or skips itself if already done)."""
    result = RunResult(0)
    trees = stage_configs(raw)
    for index, tree in enumerate(trees):
        cfg = run_config_from_dict(tree)
        if len(trees) > 1:
            logger.info("stage %d/%d -> %s", index + 1, len(trees), cfg.run_dir)
        result = train(cfg)
        if result.interrupted_by is not None or result.final_step < (result.total_steps or cfg.train.steps):
            break  # a later stage must start from a finished one
    return result
