"""The start of every training run, whatever it optimises: mesh, starting model split into
trainable and frozen parameters, prepared data and its feed, the run's length, the checkpoint
directory and metrics file, and the resume from the latest committed checkpoint.

`loop.py` (supervised) and `dpo/loop.py` (preferences) both start this way, so both write the
same run directory and resume the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from train_jax import checkpoint as ckpt
from train_jax.config.run_config import RunConfig
from train_jax.data.prepare import PreparedDataset
from train_jax.sharding.mesh import build_mesh
from train_jax.train.checkpointing import TrainCheckpointer
from train_jax.train.data_feed import BatchFeed, prepare_sources
from train_jax.train.metrics import MetricsLogger
from train_jax.train.model_init import InitialModel, load_initial_model
from train_jax.train.partition import ModelParts, PureTree
from train_jax.train.run_control import CHECKPOINT_DIR, planned_steps, write_resolved_config
from train_jax.train.schedule_plan import PlannedState, resumed_plan

logger = logging.getLogger(__name__)


@dataclass
class RunStart:
    """Everything built before the first step (the starting model itself is already split)."""

    run_dir: Path
    is_main: bool  # process 0: writes the config, checkpoint info and metrics
    mesh: Mesh
    initial: InitialModel  # config, assets and source of the starting model; `model` deleted
    parts: ModelParts
    trainable: PureTree
    frozen: PureTree
    n_train: int
    n_frozen: int
    datasets: list[PreparedDataset]
    feed: BatchFeed
    total_steps: int


def start_run(cfg: RunConfig) -> RunStart:
    """Write RUN_DIR/config.yaml, build the mesh and the starting model, prepare the data."""
    run_dir = Path(cfg.run_dir)
    is_main = jax.process_index() == 0
    if is_main:
        write_resolved_config(cfg, run_dir)
    mesh = build_mesh(cfg.mesh)
    logger.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
                jax.process_count())

    initial = load_initial_model(cfg.model, cfg.method, cfg.train.seed)
    parts, trainable, frozen = ModelParts.split(initial.model, cfg.method)
    del initial.model
    n_train = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trainable))
    n_frozen = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(frozen))
    logger.info("method %s: %.2fM trainable, %.2fM frozen parameters", cfg.method.name,
                n_train / 1e6, n_frozen / 1e6)

    datasets = prepare_sources(cfg.data, initial.assets_dir,
                               Path(cfg.data.prepared_dir or run_dir / "data"),
                               progress=cfg.train.progress)
    feed = BatchFeed.create(datasets, [s.weight for s in cfg.data.sources], cfg.train.batch_size,
                            cfg.train.micro_batches, cfg.train.seed)
    total_steps = planned_steps(cfg.train, sum(d.num_rows("train") for d in datasets))
    return RunStart(run_dir, is_main, mesh, initial, parts, trainable, frozen, n_train,
                    n_frozen, datasets, feed, total_steps)


def open_outputs(cfg: RunConfig, run: RunStart) -> tuple[TrainCheckpointer, MetricsLogger]:
    """RUN_DIR/checkpoints (with the checkpoint info `jaxtune export` reads) and the metrics."""
    ckpt_dir = run.run_dir / CHECKPOINT_DIR
    if run.is_main:
        ckpt.write_checkpoint_info(ckpt_dir, run.initial.cfg, source=run.initial.source,
                                   assets_from=run.initial.assets_dir)
    return TrainCheckpointer(ckpt_dir, cfg.checkpoint), MetricsLogger(run.run_dir,
                                                                       enabled=run.is_main)


def restore_latest(checkpointer: TrainCheckpointer, metrics: MetricsLogger, feed: BatchFeed,
                   state: Any) -> tuple[Any, int | None]:
    """The state of the latest committed checkpoint (and the data position and metrics file
    rewound to it), or `state` unchanged; with the step resumed from (None: a fresh run)."""
    start = checkpointer.latest_step()
    if start is None:
        return state, None
    state, data_state = checkpointer.restore(start, state)
    feed.set_state(data_state)
    metrics.truncate_after(start)
    return state, start


def settle_plan(cfg: RunConfig, planned: PlannedState, start: int | None,
                planned_total: int) -> bool:
    """After `restore_latest(..., planned, ...)`: the schedule plan the run follows from here
    (`planned.plan`: the checkpoint's fixed length, or the config's), logged in one line. True
    when it differs from the plan the steps were built with (the loop then rebuilds them;
    nothing has compiled yet)."""
    built = planned.plan
    if start is not None:
        planned.plan = resumed_plan(cfg, planned_total, start, planned.restored)
    logger.info("%s", planned.plan.describe(cfg.optimizer))
    return planned.plan != built
