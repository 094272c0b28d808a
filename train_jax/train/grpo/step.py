"""The jitted GRPO steps, sharded like the supervised step (`train_jax.train.step`): the same
state and its partition specs, explicit in/out shardings, the state donated to the update.

- `logprob_step(state, reference, batch)`: per-token log-probs of the rollout rows under the
  policy that sampled them (`old_logp`) and under the reference (`ref_logp`), once per batch.
  With one update per rollout and no dropout, the policy being updated *is* the one that
  sampled, so `old_logp` is the update's own forward pass with its gradient stopped (ratio 1,
  the same gradient) and this step computes `ref_logp` only: one forward pass fewer per step.
- `update_step(state, batch)`: `updates_per_rollout` AdamW updates on the GRPO loss
  (`objective.py`), each accumulated over the batch's micro-batches exactly as one pass.

Log-probs are of the sampling distribution, softmax(logits / temperature) (as TRL does), so
the ratio compares like with like; scaling the final hidden state by 1 / temperature scales the
logits (the head has no bias), so the fused head + cross-entropy op never materialises them.
The reference is a frozen copy of the starting trainable weights, or for LoRA the model with
its adapters switched off (no second copy: the base weights are the frozen ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from train_jax.config.run_config import GrpoConfig, OptimizerConfig
from train_jax.model import axes
from train_jax.model.kernels.backend import kernel_ops
from train_jax.model.llama import LlamaForCausalLM
from train_jax.sharding.per_shard import per_shard_mapping
from train_jax.sharding.rules import logical_to_spec
from train_jax.sharding.specs import batch_sharding, named, use_mesh_constraints
from train_jax.train.grpo.objective import loss_sums
from train_jax.train.optimizer import build_optimizer, learning_rate_schedule
from train_jax.train.partition import ModelParts, PureTree
from train_jax.train.step import BATCH_KEYS, Batch, TrainState, state_partition_specs

LOGP_KEYS: tuple[str, ...] = ("old_logp", "ref_logp")  # all, when old_logp is a separate pass
SUM_KEYS: tuple[str, ...] = ("loss", "kl", "clipped", "tokens")


def token_logprobs(model: LlamaForCausalLM, batch: Batch, temperature: float) -> jax.Array:
    """float32 (B, T) log-probability of each target under softmax(logits / temperature)."""
    x = model.final_hidden(batch["input_ids"], batch["positions"], batch["segment_ids"])
    if model.lm_head is None:
        table = model.embed_tokens["embedding"][...]
    else:
        table = model.lm_head.kernel[...].T  # (V, D); the head has no bias and no LoRA
    ce = kernel_ops(model.cfg.kernels).head_cross_entropy(x * (1.0 / temperature), table,
                                                          batch["targets"])
    return -ce


@dataclass
class GrpoSteps:
    """The jitted steps and the shardings their arguments take."""

    logprob_step: Any  # (state, reference, rows) -> {"old_logp"?, "ref_logp"}
    logp_keys: tuple[str, ...]  # what logprob_step returns: ("ref_logp",) when on_policy
    update_step: Any  # (state, batch) -> (state, metrics)
    state_shardings: Any
    reference_shardings: Any  # of the frozen reference copy ({} for LoRA: adapters off)
    batch_shardings: dict[str, NamedSharding]
    tx: optax.GradientTransformation


def build_grpo_steps(grpo: GrpoConfig, optimizer: OptimizerConfig, parts: ModelParts,
                     mesh: Mesh, trainable: PureTree, total_steps: int,
                     batch_shape: tuple[int, int, int], *, lora_reference: bool,
                     dropout: bool = False, separate_old_logp: bool | None = None) -> GrpoSteps:
    """Jit the steps for rollout rows of `batch_shape` (micro_batches, rows, length);
    `total_steps` rollout batches, so the schedule spans total_steps x updates_per_rollout.

    `dropout`: the trained model has dropout (LoRA dropout), so a train-mode pass is not the
    sampling policy. `separate_old_logp` forces (True) or forbids (False) the separate old
    log-prob pass; by default it runs only when it can differ from the update's own pass
    (several updates per rollout, or dropout).
    """
    updates = grpo.updates_per_rollout
    if separate_old_logp is None:
        separate_old_logp = updates > 1 or dropout
    elif not separate_old_logp and (updates > 1 or dropout):
        raise ValueError("old log-probs need their own pass with several updates per rollout "
                         "or with dropout")
    logp_keys = LOGP_KEYS if separate_old_logp else ("ref_logp",)
    micro = batch_shape[0]
    schedule = learning_rate_schedule(optimizer, total_steps * updates)
    tx = build_optimizer(optimizer, schedule)
    shardings = named(mesh, state_partition_specs(parts, tx, mesh, trainable))
    reference_shardings = {} if lora_reference else shardings["trainable"]
    rows = batch_sharding(mesh, batch_shape)
    per_row = NamedSharding(mesh, logical_to_spec((None, axes.BATCH), batch_shape[:2], mesh))
    batch_shardings = {**{k: rows for k in (*BATCH_KEYS, *logp_keys)}, "advantages": per_row}
    replicated = NamedSharding(mesh, PartitionSpec())

    def logp(trainable: PureTree, frozen: PureTree, mb: Batch, rng_index: Any, *,
             train: bool, adapters: bool = True) -> jax.Array:
        model = parts.merge(trainable, frozen, rng_index, train=train)
        if not adapters:
            model.set_lora_enabled(False)
        with use_mesh_constraints(mesh), per_shard_mapping(mesh):
            return token_logprobs(model, mb, grpo.temperature)

    def logprob_step(state: TrainState, reference: PureTree, batch: Batch) -> dict[str, Any]:
        def body(_: None, mb: Batch) -> tuple[None, dict[str, jax.Array]]:
            out = {}
            if separate_old_logp:
                out["old_logp"] = logp(state["trainable"], state["frozen"], mb, 0, train=False)
            if lora_reference:
                out["ref_logp"] = logp(state["trainable"], state["frozen"], mb, 0, train=False,
                                       adapters=False)
            else:
                out["ref_logp"] = logp(reference, state["frozen"], mb, 0, train=False)
            return None, out

        return jax.lax.scan(body, None, batch)[1]

    def update_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        # The token count is known before any gradient: each micro-batch's sums divided by the
        # whole batch's count add up to the token-level mean over the batch.
        denom = jnp.maximum(jnp.sum(batch["loss_mask"].astype(jnp.float32)), 1.0)

        def loss_fn(p: PureTree, mb: Batch, index: jax.Array) -> tuple[jax.Array, Any]:
            policy = logp(p, state["frozen"], mb, index, train=True)
            old = mb["old_logp"] if separate_old_logp else jax.lax.stop_gradient(policy)
            sums = loss_sums(policy, old, mb["ref_logp"], mb["loss_mask"],
                             mb["advantages"], grpo.clip_epsilon, grpo.kl_coef)
            return sums["loss"] / denom, sums

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def gradients(trainable: PureTree, first_index: jax.Array) -> tuple[Any, Any]:
            if micro == 1:
                (_, sums), grads = grad_fn(trainable, jax.tree.map(lambda x: x[0], batch),
                                           first_index)
                return grads, sums

            def accumulate(carry: Any, xs: tuple[Batch, jax.Array]) -> tuple[Any, None]:
                acc, totals = carry
                (_, sums), g = grad_fn(trainable, *xs)
                acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), acc, g)
                return (acc, jax.tree.map(jnp.add, totals, sums)), None

            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)
            totals = {k: jnp.float32(0) for k in SUM_KEYS}
            (grads, sums), _ = jax.lax.scan(accumulate, (zeros, totals),
                                            (batch, first_index + jnp.arange(micro)))
            return jax.tree.map(lambda g, p: g.astype(p.dtype), grads, trainable), sums

        def one_update(carry: tuple[PureTree, Any], update: jax.Array) -> tuple[Any, Any]:
            trainable, opt_state = carry
            grads, sums = gradients(trainable, (state["step"] * updates + update) * micro)
            deltas, opt_state = tx.update(grads, opt_state, trainable)
            metrics = {"loss": sums["loss"] / denom, "kl": sums["kl"] / denom,
                       "clip_fraction": sums["clipped"] / denom,
                       "grad_norm": optax.global_norm(grads)}
            return (optax.apply_updates(trainable, deltas), opt_state), metrics

        carry = (state["trainable"], state["opt_state"])
        if updates == 1:
            (trainable, opt_state), metrics = one_update(carry, jnp.int32(0))
        else:
            (trainable, opt_state), per_update = jax.lax.scan(one_update, carry,
                                                              jnp.arange(updates))
            metrics = {k: jnp.mean(v) for k, v in per_update.items()}
            metrics["grad_norm"] = per_update["grad_norm"][-1]
        new_state = {"step": state["step"] + 1, "trainable": trainable,
                     "frozen": state["frozen"], "opt_state": opt_state}
        metrics["lr"] = schedule(state["step"] * updates)
        return new_state, metrics

    row_shardings = {k: rows for k in BATCH_KEYS}
    jit_logprob = jax.jit(logprob_step,
                          in_shardings=(shardings, reference_shardings, row_shardings),
                          out_shardings={k: rows for k in logp_keys})
    jit_update = jax.jit(update_step, in_shardings=(shardings, batch_shardings),
                         out_shardings=(shardings, replicated), donate_argnums=0)
    return GrpoSteps(jit_logprob, logp_keys, jit_update, shardings, reference_shardings,
                     batch_shardings, tx)
