"""Sequential training stages: stage k+1 starts from stage k's final checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

from train_jax.config.run_config import RunConfig, merge_stage, run_config_from_dict
from train_jax.train.loop import CHECKPOINT_DIR, RunResult, train

logger = logging.getLogger(__name__)


def stage_configs(cfg: RunConfig) -> list[RunConfig]:
    """The config of every stage of `cfg`, chained through their run directories."""
    if not cfg.stages:
        return [cfg]
    base = cfg.to_dict()
    root = Path(cfg.run_dir)
    out: list[RunConfig] = []
    for index, stage in enumerate(cfg.stages):
        tree = merge_stage(base, stage)
        tree["run_dir"] = str(root / f"stage-{index + 1}")
        if index > 0:
            previous = Path(out[-1].run_dir) / CHECKPOINT_DIR
            tree["model"] = {**dict(tree.get("model") or {}), "path": str(previous),
                             "architecture": None, "tokenizer": None}
        out.append(run_config_from_dict(tree))
    return out


def run_stages(cfg: RunConfig) -> RunResult:
    """Train every stage in order (each resumes or skips itself if already done)."""
    result = RunResult(0)
    stages = stage_configs(cfg)
    for index, stage in enumerate(stages):
        if len(stages) > 1:
            logger.info("stage %d/%d -> %s", index + 1, len(stages), stage.run_dir)
        result = train(stage)
        if result.interrupted_by is not None or result.final_step < (result.total_steps
                                                                     or stage.train.steps):
            break  # a later stage must start from a finished one
    return result
