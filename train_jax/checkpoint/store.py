"""Orbax storage of the `steps/` folder of a jaxtune checkpoint.

Every step holds the item `params` (`ocp.args.StandardSave` of the pure-dict params tree
`nnx.state(model, nnx.Param).to_pure_dict()`, base weights plus any LoRA adapters). Training
adds its own items (`opt_state`, `data_state`, `run_config`) to the same steps; readers here
restore only `params`. Orbax commits a step atomically, and only committed steps are listed,
so a half-written step is never restored. Host restores read the arrays with tensorstore
directly (`host_read`, a fraction of orbax's per-array overhead); restores onto shardings,
and items that reader does not handle, go through orbax.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from train_jax.checkpoint.host_read import StoredArrays, open_item
from train_jax.checkpoint.layout import (
    CheckpointError,
    read_checkpoint_info,
    steps_dir,
    write_checkpoint_info,
)
from train_jax.convert import names
from train_jax.model.config import LoraSpec, ModelConfig

logger = logging.getLogger(__name__)

PARAMS_ITEM = "params"

Params = dict[str, Any]


class NoCommittedStepError(CheckpointError):
    """The checkpoint has no committed step (or not the one asked for)."""


def checkpoint_manager(ckpt_dir: str | Path, *, options: ocp.CheckpointManagerOptions | None = None,
                       read_only: bool = False) -> ocp.CheckpointManager:
    """An orbax `CheckpointManager` on `CKPT_DIR/steps` (the trainer saves its steps with it).

    Save a step with `manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(
    params), ...))`; the `params` item is what `restore_params` and `jaxtune export` read.
    """
    root = steps_dir(ckpt_dir).absolute()
    if not read_only:
        # Writers register handlers from the save args, so the trainer can add any items.
        return ocp.CheckpointManager(root, options=options)
    # Readers name the `params` handler so its metadata (shapes, dtypes) can be read.
    return ocp.CheckpointManager(root, options=options or ocp.CheckpointManagerOptions(
        read_only=True, save_interval_steps=0, create=False),
                                 item_handlers={PARAMS_ITEM: ocp.PyTreeCheckpointHandler()})


def committed_steps(ckpt_dir: str | Path) -> list[int]:
    """Sorted committed steps of `ckpt_dir` (empty when there is none)."""
    read_checkpoint_info(ckpt_dir)
    if not steps_dir(ckpt_dir).is_dir():
        return []
    with checkpoint_manager(ckpt_dir, read_only=True) as manager:
        return sorted(manager.all_steps())


def write_model_checkpoint(ckpt_dir: str | Path, params: Params, model_config: ModelConfig, *,
                           assets_from: str | Path | None = None, step: int = 0,
                           lora: LoraSpec | None = None,
                           source: Mapping[str, Any] | None = None) -> Path:
    """Write a complete checkpoint (info file, HF assets, one step holding `params`).

    `params` is the pure-dict params tree (numpy or jax arrays). Used by `jaxtune model import`;
    returns `ckpt_dir`. Refuses to overwrite an existing step. The arrays are stored without
    zarr compression: on bf16 weights it saves ~20% of disk but more than doubles restore time,
    and an imported base model is read far more often than written. (Any orbax checkpoint of
    the same tree, compressed or not, restores the same way.)
    """
    ckpt_dir = Path(ckpt_dir)
    write_checkpoint_info(ckpt_dir, model_config, lora=lora, source=source, assets_from=assets_from)
    handler = ocp.PyTreeCheckpointHandler(use_compression=False)
    with ocp.CheckpointManager(steps_dir(ckpt_dir).absolute(), item_handlers={PARAMS_ITEM: handler}) as manager:
        if step in manager.all_steps():
            raise CheckpointError(f"{ckpt_dir} already has step {step}; choose another --out")
        manager.save(step, args=ocp.args.Composite(**{PARAMS_ITEM: ocp.args.PyTreeSave(params)}))
        manager.wait_until_finished()
    logger.info("wrote checkpoint %s (step %d)", ckpt_dir, step)
    return ckpt_dir


def resolve_step(ckpt_dir: str | Path, step: int | None = None) -> int:
    """`step` if committed, else the latest committed step; clear errors when there is none."""
    return _resolve(ckpt_dir, committed_steps(ckpt_dir), step)


def _resolve(ckpt_dir: str | Path, steps: list[int], step: int | None) -> int:
    if not steps:
        raise NoCommittedStepError(f"{ckpt_dir} has no committed step under {steps_dir(ckpt_dir)}")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise NoCommittedStepError(f"{ckpt_dir} has no committed step {step}; committed steps: {steps}")
    return step


def restore_params(ckpt_dir: str | Path, step: int | None = None,
                   target_shardings: Any | None = None) -> Params:
    """Restore the `params` item of a step (the latest committed one by default).

    Without `target_shardings` the leaves are host numpy arrays; with a pytree of
    `jax.sharding.Sharding` matching the params tree they are jax arrays placed accordingly.
    Other items of the step (optimizer state, data state) are not read.
    """
    if target_shardings is None:
        stored = open_params(ckpt_dir, step)
        if stored is not None:
            return names.unflatten(stored.read_all())
    read_checkpoint_info(ckpt_dir)
    if not steps_dir(ckpt_dir).is_dir():
        raise NoCommittedStepError(f"{ckpt_dir} has no committed step under {steps_dir(ckpt_dir)}")
    with checkpoint_manager(ckpt_dir, read_only=True) as manager:
        step = _resolve(ckpt_dir, sorted(manager.all_steps()), step)
        return _intify_keys(_restore_from_metadata(manager, ckpt_dir, step, target_shardings))


def open_params(ckpt_dir: str | Path, step: int | None = None) -> StoredArrays | None:
    """The arrays of a step's `params` item opened for reading into host memory, or None.

    Keys are the flat paths of the params tree (`names.flatten`). Orbax's restore is dominated by
    per-array Python and asyncio work; tensorstore reads the same files in a fraction of that
    (`train_jax.checkpoint.host_read`, docs/BENCHMARKS.md#export). None when that reader does not handle
    the item (restore it with `restore_params`, which then goes through orbax).
    """
    step = resolve_step(ckpt_dir, step)
    root = steps_dir(ckpt_dir).absolute()
    step_dir = ocp.path.step.find_step_path(root, ocp.path.step.standard_name_format(), step=step)
    return open_item(Path(step_dir) / PARAMS_ITEM)


def _restore_from_metadata(manager: ocp.CheckpointManager, ckpt_dir: str | Path, step: int,
                           target_shardings: Any | None) -> Params:
    metadata = manager.item_metadata(step)
    if PARAMS_ITEM not in metadata or metadata[PARAMS_ITEM] is None:
        raise CheckpointError(f"step {step} of {ckpt_dir} has no `{PARAMS_ITEM}` item")
    meta_tree = getattr(metadata[PARAMS_ITEM], "tree", metadata[PARAMS_ITEM])
    if target_shardings is None:
        target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), meta_tree)
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta_tree)
    else:
        shardings = _stringify_keys(target_shardings)
        try:
            target = jax.tree.map(lambda m, s: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=s),
                                  meta_tree, shardings)
        except ValueError as exc:
            raise CheckpointError(
                f"target_shardings does not match the params tree of {ckpt_dir}: {exc}") from None
        restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    restored = manager.restore(step, args=ocp.args.Composite(
        **{PARAMS_ITEM: ocp.args.PyTreeRestore(item=target, restore_args=restore_args)}))
    return restored[PARAMS_ITEM]


def _stringify_keys(tree: Any) -> Any:
    # Orbax stores dict keys as strings; nnx.List layers use int keys in the pure dict.
    if isinstance(tree, Mapping):
        return {str(k): _stringify_keys(v) for k, v in tree.items()}
    return tree


def _intify_keys(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _intify_keys(v)
                for k, v in tree.items()}
    return tree
