"""Rollouts and the rows an update trains on.

`Sampler` runs the Flax model's own KV-cache sampler (`train_jax.model.generate.sample_tokens`)
on the current policy parameters, jitted once for the rollout shape (rows = prompts_per_step x
group_size, the longest prompt, max_new_tokens) with the parameters sharded as in training and
the rows split over the batch mesh axes. `update_rows` lays prompt + completion out as one row
per completion, in the sampler's left-padded layout, with only the completion tokens trained.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from train_jax.data.packing import ARRAY_DTYPES
from train_jax.model import axes
from train_jax.model.generate import eos_array, sample_tokens
from train_jax.sharding.rules import logical_to_spec
from train_jax.sharding.specs import use_mesh_constraints
from train_jax.train.partition import ModelParts, PureTree
from train_jax.train.step import place


class Sampler:
    """`sampler(trainable, frozen, prompts, pad, key) -> (tokens, counts)` as host arrays."""

    def __init__(self, parts: ModelParts, mesh: Mesh, param_shardings: tuple[Any, Any], *,
                 rows: int, width: int, max_new_tokens: int, temperature: float,
                 eos_token_id: int | list[int] | None):
        self.rows, self.width = rows, width
        self.row_sharding = NamedSharding(
            mesh, logical_to_spec((axes.BATCH, axes.LENGTH), (rows, width), mesh))
        self.pad_sharding = NamedSharding(mesh, logical_to_spec((axes.BATCH,), (rows,), mesh))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        eos = eos_array(eos_token_id)

        def sample(trainable: PureTree, frozen: PureTree, prompts: jax.Array, pad: jax.Array,
                   key_data: jax.Array) -> tuple[jax.Array, jax.Array]:
            model = parts.merge(trainable, frozen, train=False)  # dropout off while sampling
            with use_mesh_constraints(mesh):
                return sample_tokens(model, prompts, pad, eos, jax.random.wrap_key_data(key_data),
                                     max_new_tokens, np.float32(temperature))

        # The outputs are small (rows x new tokens) and every process scores all of them.
        self._sample = jax.jit(sample, in_shardings=(*param_shardings, self.row_sharding,
                                                     self.pad_sharding, self.replicated),
                               out_shardings=(self.replicated, self.replicated))

    def __call__(self, trainable: PureTree, frozen: PureTree, prompts: np.ndarray,
                 pad: np.ndarray, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        if prompts.shape != (self.rows, self.width):
            raise ValueError(f"rollout prompts {prompts.shape}, compiled for "
                             f"{(self.rows, self.width)}")
        tokens, counts = self._sample(
            trainable, frozen, place(prompts, self.row_sharding), place(pad, self.pad_sharding),
            place(np.asarray(jax.random.key_data(key)), self.replicated))
        return np.asarray(jax.device_get(tokens)), np.asarray(jax.device_get(counts))


def update_rows(prompts: np.ndarray, pad: np.ndarray, tokens: np.ndarray, counts: np.ndarray,
                micro_batches: int) -> dict[str, np.ndarray]:
    """Train rows (micro_batches, rows / micro_batches, P + N) of the sampled completions.

    Row r is `prompts[r]` (left-padded to P) followed by its N new tokens; positions count from
    the first real token; segment 1 covers prompt and completion (padding is segment 0, which
    attends to nothing real); `loss_mask` marks the targets that are completion tokens (the
    EOS included, so the policy learns when to stop).
    """
    rows, width = prompts.shape
    length = width + tokens.shape[1]
    seq = np.concatenate([prompts, tokens], axis=1).astype(np.int32)  # (R, L)
    col = np.arange(length)[None, :]
    real = (col >= pad[:, None]) & (col < width + counts[:, None])
    target_col = col + 1
    trained = (target_col >= width) & (target_col < width + counts[:, None])
    arrays = {
        "input_ids": seq,
        "targets": np.concatenate([seq[:, 1:], np.zeros((rows, 1), np.int32)], axis=1),
        "loss_mask": trained,
        "segment_ids": real,
        "positions": np.where(real, col - pad[:, None], 0),
    }
    per = rows // micro_batches
    return {k: v.astype(ARRAY_DTYPES[k]).reshape(micro_batches, per, length)
            for k, v in arrays.items()}
