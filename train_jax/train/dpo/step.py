"""The jitted DPO train and eval steps: pure functions of (state, reference, batch).

A batch holds (micro_batches, pairs, 2, length) arrays: index 0 of the third axis is the
chosen sequence of a pair, 1 the rejected one (`train_jax.data.preference`). The state is the
supervised step's (`step`, `trainable`, `frozen`, `opt_state`), so checkpoints, resume and
export are the same. `reference` holds the reference model's own weights: a copy of the
starting trainable parameters (full, freeze), or nothing (LoRA: the reference is this model
with its adapters switched off). Reference log-probs are computed in the same step, outside
the differentiated function, so no gradient flows into them.

The loss is the mean over all pairs of the whole batch: each micro-batch differentiates its
sum of pair losses divided by the batch's pair count, so accumulation equals one large batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from train_jax.config.run_config import DpoConfig, RunConfig
from train_jax.data.packing import ARRAY_DTYPES
from train_jax.model import axes
from train_jax.model.llama import LlamaForCausalLM
from train_jax.sharding.per_shard import per_shard_mapping
from train_jax.sharding.rules import logical_to_spec
from train_jax.sharding.specs import named, use_mesh_constraints
from train_jax.train.dpo.loss import dpo_losses
from train_jax.train.optimizer import build_optimizer, learning_rate_schedule
from train_jax.train.partition import ModelParts, PureTree
from train_jax.train.step import BATCH_KEYS, TrainState, state_partition_specs

Batch = dict[str, jax.Array]
# Pair batches: rows (pairs) split over the batch mesh axes; a pair's two sequences stay together.
PAIR_BATCH_AXES: axes.LogicalAxes = (None, axes.BATCH, None, axes.LENGTH)
# Sums over pairs each step reports (divided by the pair count into the logged means).
SUM_KEYS: tuple[str, ...] = ("loss", "reward_margin", "accuracy", "chosen_logp",
                             "rejected_logp", "chosen_reward", "rejected_reward")


def sequence_logps(model: LlamaForCausalLM, mesh: Mesh, batch: Batch) -> jax.Array:
    """(pairs, 2) summed log-probs of the trained (completion) tokens of each sequence."""
    pairs, _, length = batch["input_ids"].shape
    flat = {k: batch[k].reshape(pairs * 2, length) for k in BATCH_KEYS}
    # Activation constraints, and kernels XLA cannot partition run shard by shard, as in SFT.
    with use_mesh_constraints(mesh), per_shard_mapping(mesh):
        ce = model.token_losses(flat["input_ids"], flat["targets"], flat["positions"],
                                flat["segment_ids"])
    mask = flat["loss_mask"].astype(jnp.float32)
    return -jnp.sum(ce * mask, axis=-1).reshape(pairs, 2)


def reference_model(parts: ModelParts, state: TrainState, reference: PureTree
                    ) -> LlamaForCausalLM:
    """The frozen reference: the starting weights (`reference` holds the trainable part), or,
    when `reference` is empty (LoRA), this model with its adapters switched off."""
    if reference:
        return parts.merge(reference, state["frozen"], train=False)
    model = parts.merge(state["trainable"], state["frozen"], train=False)
    model.set_lora_enabled(False)
    return model


def pair_sums(policy: jax.Array, ref: jax.Array, valid: jax.Array, dpo: DpoConfig
              ) -> dict[str, jax.Array]:
    """Sums over the valid pairs of the loss and the logged quantities (see `SUM_KEYS`)."""
    terms = dpo_losses(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta=dpo.beta,
                       loss=dpo.loss, label_smoothing=dpo.label_smoothing)
    margin = terms.chosen_rewards - terms.rejected_rewards
    values = {"loss": terms.losses, "reward_margin": margin,
              "accuracy": (margin > 0).astype(jnp.float32),
              "chosen_logp": jax.lax.stop_gradient(policy[:, 0]),
              "rejected_logp": jax.lax.stop_gradient(policy[:, 1]),
              "chosen_reward": terms.chosen_rewards, "rejected_reward": terms.rejected_rewards}
    return {k: jnp.sum(v * valid) for k, v in values.items()}


def valid_pairs(batch: Batch) -> jax.Array:
    """(..., pairs) 1.0 where both sequences have trained tokens (0.0 for padding pairs)."""
    trained = jnp.sum(batch["loss_mask"].astype(jnp.float32), axis=-1) > 0
    return jnp.all(trained, axis=-1).astype(jnp.float32)


@dataclass
class DpoSteps:
    """Jitted `train_step(state, reference, batch) -> (state, metrics)` and
    `eval_step(state, reference, batches) -> sums`, with the shardings they take."""

    train_step: Any
    eval_step: Callable[[TrainState, PureTree, Batch], dict[str, jax.Array]]
    state_shardings: Any
    reference_shardings: Any
    batch_shardings: Callable[[tuple[int, ...]], dict[str, NamedSharding]]
    tx: optax.GradientTransformation
    batch_shape: tuple[int, int, int, int]  # (micro_batches, pairs per micro-batch, 2, length)


def build_dpo_steps(cfg: RunConfig, parts: ModelParts, mesh: Mesh, trainable: PureTree,
                    has_reference_copy: bool, total_steps: int,
                    decay_start: int | None = None) -> DpoSteps:
    """The jitted DPO steps of run `cfg` on `mesh` (optimizer and schedule as in SFT;
    `decay_start` as in `step.build_train_steps`)."""
    schedule = learning_rate_schedule(cfg.optimizer, total_steps, decay_start)
    tx = build_optimizer(cfg.optimizer, schedule)
    micro = cfg.train.micro_batches
    shape = (micro, cfg.train.batch_size // micro, 2, cfg.data.max_length)
    specs = state_partition_specs(parts, tx, mesh, trainable)
    state_sh = named(mesh, specs)
    ref_sh = state_sh["trainable"] if has_reference_copy else {}
    replicated = NamedSharding(mesh, PartitionSpec())
    dpo = cfg.objective.dpo

    def micro_sums(state: TrainState, reference: PureTree, mb: Batch, index: jax.Array,
                   denom: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        ref = jax.lax.stop_gradient(
            sequence_logps(reference_model(parts, state, reference), mesh, mb))
        valid = valid_pairs(mb)

        def loss(p: PureTree) -> tuple[jax.Array, dict[str, jax.Array]]:
            model = parts.merge(p, state["frozen"], index, train=True)
            sums = pair_sums(sequence_logps(model, mesh, mb), ref, valid, dpo)
            return sums["loss"] / denom, sums

        (_, sums), grads = jax.value_and_grad(loss, has_aux=True)(state["trainable"])
        return grads, sums

    def train_step(state: TrainState, reference: PureTree, batch: Batch
                   ) -> tuple[TrainState, dict[str, jax.Array]]:
        pairs = jnp.sum(valid_pairs(batch))
        denom = jnp.maximum(pairs, 1.0)
        first_rng = state["step"] * micro
        if micro == 1:
            grads, sums = micro_sums(state, reference, jax.tree.map(lambda x: x[0], batch),
                                     first_rng, denom)
        else:
            def accumulate(carry: Any, xs: tuple[Batch, jax.Array]) -> tuple[Any, None]:
                acc, total = carry
                g, s = micro_sums(state, reference, *xs, denom)
                acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), acc, g)
                return (acc, jax.tree.map(jnp.add, total, s)), None

            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state["trainable"])
            no_sums = {k: jnp.float32(0) for k in SUM_KEYS}
            (grads, sums), _ = jax.lax.scan(accumulate, (zeros, no_sums),
                                            (batch, first_rng + jnp.arange(micro)))
            grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state["trainable"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["trainable"])
        new_state = {"step": state["step"] + 1,
                     "trainable": optax.apply_updates(state["trainable"], updates),
                     "frozen": state["frozen"], "opt_state": opt_state}
        metrics = {k: v / denom for k, v in sums.items()}
        metrics.update(grad_norm=optax.global_norm(grads), lr=schedule(state["step"]),
                       pairs=pairs)
        return new_state, metrics

    def eval_step(state: TrainState, reference: PureTree, batch: Batch) -> dict[str, jax.Array]:
        def body(carry: dict[str, jax.Array], mb: Batch) -> tuple[Any, None]:
            ref = sequence_logps(reference_model(parts, state, reference), mesh, mb)
            policy = sequence_logps(parts.merge(state["trainable"], state["frozen"], train=False),
                                    mesh, mb)
            valid = valid_pairs(mb)
            sums = pair_sums(policy, ref, valid, dpo)
            sums["pairs"] = jnp.sum(valid)
            return jax.tree.map(jnp.add, carry, sums), None

        zero = {k: jnp.float32(0) for k in (*SUM_KEYS, "pairs")}
        sums, _ = jax.lax.scan(body, zero, batch)
        return sums

    def batch_shardings(batch_shape: tuple[int, ...]) -> dict[str, NamedSharding]:
        spec = logical_to_spec(PAIR_BATCH_AXES, batch_shape, mesh)
        return {k: NamedSharding(mesh, spec) for k in BATCH_KEYS}

    jit_train = jax.jit(train_step, in_shardings=(state_sh, ref_sh, batch_shardings(shape)),
                        out_shardings=(state_sh, replicated), donate_argnums=0)
    # Validation batches may have another leading size; they arrive placed by `put_batch`.
    jit_eval = jax.jit(eval_step, in_shardings=(state_sh, ref_sh, None),
                       out_shardings=replicated)
    return DpoSteps(jit_train, jit_eval, state_sh, ref_sh, batch_shardings, tx, shape)


def abstract_pair_batch(shardings: dict[str, NamedSharding], shape: tuple[int, ...]
                        ) -> dict[str, jax.ShapeDtypeStruct]:
    """A pair batch of `shape` as ShapeDtypeStructs with the dtypes the data feed yields."""
    return {k: jax.ShapeDtypeStruct(shape, ARRAY_DTYPES[k], sharding=shardings[k])
            for k in BATCH_KEYS}
