"""Training checkpoints in the jaxtune checkpoint layout (`train_jax.checkpoint`).

Each saved step holds `params` (trainable + frozen, the full pure-dict tree that `jaxtune
export` reads), `opt_state`, `data_state` (the iterator position) and `run_config`. Orbax
commits steps atomically; only committed steps are listed and restored. Kept: the last
`checkpoint.keep` steps plus the best `checkpoint.keep_best` by `checkpoint.best_metric`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from train_jax.checkpoint import checkpoint_manager
from train_jax.checkpoint.best import step_metadata
from train_jax.config.run_config import CheckpointConfig
from train_jax.train.partition import merge_pure, select_pure
from train_jax.train.step import TrainState, place

logger = logging.getLogger(__name__)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        tree)


class TrainCheckpointer:
    """Saves and restores the train state, data position and config under CKPT_DIR/steps."""

    def __init__(self, ckpt_dir: str | Path, cfg: CheckpointConfig):
        self.cfg = cfg
        policies: list[Any] = [LatestN(cfg.keep)]
        if cfg.keep_best:
            policies.append(BestN(get_metric_fn=lambda m: m[cfg.best_metric],
                                  reverse=cfg.best_mode == "min", n=cfg.keep_best,
                                  keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=cfg.async_save,
            preservation_policy=AnyPreservationPolicy(policies))
        self.manager = checkpoint_manager(ckpt_dir, options=options)

    def latest_step(self) -> int | None:
        """The latest committed step (None when there is none)."""
        return self.manager.latest_step()

    def save(self, state: TrainState, data_state: dict[str, Any], run_config: dict[str, Any],
             metrics: dict[str, float] | None = None) -> None:
        """Start saving the state at its current step (async: returns after the device copy)."""
        step = int(state["step"])
        usable = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        # Recorded on disk too: orbax keeps BestN's metrics in memory only, and `jaxtune
        # export --step best` runs in another process.
        recorded = step_metadata(usable, self.cfg.best_metric, self.cfg.best_mode)
        if self.cfg.keep_best and self.cfg.best_metric not in usable:
            usable = {}  # a step without the ranking metric is kept only as one of the last
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(merge_pure(state["trainable"], state["frozen"])),
            opt_state=ocp.args.StandardSave(state["opt_state"]),
            data_state=ocp.args.JsonSave(data_state),
            run_config=ocp.args.JsonSave(run_config))
        self.manager.save(step, args=args, metrics=usable or None, force=True,
                          custom_metadata=recorded)
        logger.info("checkpoint: saving step %d", step)

    def restore(self, step: int, like: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """The train state of `step` placed like `like`, and the saved data iterator state."""
        full_like = merge_pure(like["trainable"], like["frozen"])
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(full_like)),
            opt_state=ocp.args.StandardRestore(_abstract(like["opt_state"])),
            data_state=ocp.args.JsonRestore()))
        params = restored["params"]
        state = {"step": place(np.int32(step), like["step"].sharding),
                 "trainable": select_pure(params, like["trainable"]),
                 "frozen": select_pure(params, like["frozen"]),
                 "opt_state": restored["opt_state"]}
        return state, restored["data_state"]

    def wait(self) -> None:
        """Block until every started save is committed."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
