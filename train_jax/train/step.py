"""The train and eval steps: pure functions of (state, batch), jitted once with explicit
shardings; the train state is donated.

Batches are dicts of (micro_batches, rows, length) arrays. The loss is the mean token
cross-entropy over all trained tokens of the whole batch: each micro-batch differentiates its
sum of token losses divided by the whole batch's token count (known from the loss mask before
any gradient), and the gradients are summed, so accumulation over micro-batches is exactly a
large batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from train_jax.config.run_config import RunConfig
from train_jax.data.packing import ARRAY_DTYPES
from train_jax.sharding.per_shard import per_shard_mapping
from train_jax.sharding.specs import batch_sharding, named, state_specs, use_mesh_constraints
from train_jax.train.optimizer import build_optimizer, learning_rate_schedule
from train_jax.train.partition import ModelParts, PureTree

TrainState = dict[str, Any]  # {"step", "trainable", "frozen", "opt_state"}
Batch = dict[str, jax.Array]
BATCH_KEYS: tuple[str, ...] = ("input_ids", "targets", "loss_mask", "segment_ids", "positions")


def _loss_sums(parts: ModelParts, mesh: Mesh, trainable: PureTree, frozen: PureTree,
               batch: Batch, rng_index: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """Sum of masked token cross-entropies and the number of trained tokens of one pass."""
    model = parts.merge(trainable, frozen, rng_index, train=train)
    # Activation constraints, and kernels XLA cannot partition (Mosaic) run shard by shard.
    with use_mesh_constraints(mesh), per_shard_mapping(mesh):
        ce = model.token_losses(batch["input_ids"], batch["targets"], batch["positions"],
                                batch["segment_ids"])
    mask = batch["loss_mask"].astype(jnp.float32)
    return jnp.sum(ce * mask), jnp.sum(mask)


@dataclass
class StepFunctions:
    """Jitted `train_step(state, batch) -> (state, metrics)` and `eval_step(state, batch)`."""

    train_step: Any  # jax.jit output: call it, or `.lower(state, batch)` ahead of time
    eval_step: Callable[[TrainState, Batch], dict[str, jax.Array]]
    state_shardings: Any
    batch_shardings: Callable[[tuple[int, ...]], dict[str, NamedSharding]]
    tx: optax.GradientTransformation
    batch_shape: tuple[int, int, int]  # of a train batch: (micro_batches, rows, length)


def train_batch_shape(cfg: RunConfig) -> tuple[int, int, int]:
    """(micro_batches, rows per micro-batch, length) of one global train batch of `cfg`."""
    micro = cfg.train.micro_batches
    return micro, cfg.train.batch_size // micro, cfg.data.max_length


def build_train_steps(cfg: RunConfig, parts: ModelParts, mesh: Mesh, trainable: PureTree,
                      total_steps: int, decay_start: int | None = None) -> StepFunctions:
    """The jitted steps of run `cfg` on `mesh`: optimizer, schedule and batch shape from the
    config. The one builder `jaxtune train` and the AOT plan (`aot_plan.py`) share, so a plan
    compiles exactly the step training runs. `trainable` may be abstract (ShapeDtypeStructs).
    `decay_start`: where the schedule's decay starts (None: the schedule's default).
    """
    schedule = learning_rate_schedule(cfg.optimizer, total_steps, decay_start)
    tx = build_optimizer(cfg.optimizer, schedule)
    return build_steps(parts, tx, schedule, mesh, trainable, train_batch_shape(cfg))


def state_partition_specs(parts: ModelParts, tx: optax.GradientTransformation, mesh: Mesh,
                          trainable: PureTree) -> dict[str, Any]:
    """PartitionSpecs of the whole train state (optimizer moments follow their params)."""
    t_specs = state_specs(parts.trainable, mesh)
    f_specs = state_specs(parts.frozen, mesh)
    abstract_opt = jax.eval_shape(tx.init, trainable)
    params_def = jax.tree.structure(trainable)

    def is_param_tree(node: Any) -> bool:
        return jax.tree.structure(node) == params_def

    o_specs = jax.tree.map(lambda node: t_specs if is_param_tree(node) else PartitionSpec(),
                           abstract_opt, is_leaf=is_param_tree)
    return {"step": PartitionSpec(), "trainable": t_specs, "frozen": f_specs,
            "opt_state": o_specs}


def build_steps(parts: ModelParts, tx: optax.GradientTransformation, schedule: optax.Schedule,
                mesh: Mesh, trainable: PureTree, batch_shape: tuple[int, int, int]
                ) -> StepFunctions:
    """Jit the train and eval steps; batches are (micro_batches, rows, length)."""
    micro_batches = batch_shape[0]
    specs = state_partition_specs(parts, tx, mesh, trainable)
    shardings = named(mesh, specs)
    replicated = NamedSharding(mesh, PartitionSpec())

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        # The token count is data, known before any gradient: dividing each pass's loss by the
        # whole batch's count gives gradients that need no separate division pass afterwards.
        count = jnp.sum(batch["loss_mask"].astype(jnp.float32))
        denom = jnp.maximum(count, 1.0)

        def mean_loss(p: PureTree, mb: Batch, index: jax.Array) -> tuple[jax.Array, jax.Array]:
            loss_sum, _ = _loss_sums(parts, mesh, p, state["frozen"], mb, index, True)
            return loss_sum / denom, loss_sum

        grad_fn = jax.value_and_grad(mean_loss, has_aux=True)
        first_rng = state["step"] * micro_batches

        def one(mb: Batch, index: jax.Array) -> tuple[Any, jax.Array]:
            (_, loss_sum), grads = grad_fn(state["trainable"], mb, index)
            return grads, loss_sum

        if micro_batches == 1:
            grads, loss_sum = one(jax.tree.map(lambda x: x[0], batch), first_rng)
        else:
            def accumulate(carry: Any, xs: tuple[Batch, jax.Array]) -> tuple[Any, None]:
                acc, total = carry
                g, s = one(*xs)
                acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), acc, g)
                return (acc, total + s), None

            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state["trainable"])
            indices = first_rng + jnp.arange(micro_batches)
            (grads, loss_sum), _ = jax.lax.scan(accumulate, (zeros, jnp.float32(0)),
                                                (batch, indices))
            grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state["trainable"])
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["trainable"])
        new_state = {"step": state["step"] + 1,
                     "trainable": optax.apply_updates(state["trainable"], updates),
                     "frozen": state["frozen"], "opt_state": opt_state}
        metrics = {"loss": loss_sum / denom, "grad_norm": grad_norm,
                   "lr": schedule(state["step"]), "tokens": count}
        return new_state, metrics

    def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        def body(carry: Any, mb: Batch) -> tuple[Any, None]:
            s, n = _loss_sums(parts, mesh, state["trainable"], state["frozen"], mb,
                              jnp.int32(0), False)
            return (carry[0] + s, carry[1] + n), None

        (loss_sum, count), _ = jax.lax.scan(body, (jnp.float32(0), jnp.float32(0)), batch)
        return {"loss_sum": loss_sum, "tokens": count}

    def batch_shardings(shape: tuple[int, ...]) -> dict[str, NamedSharding]:
        return {k: batch_sharding(mesh, shape) for k in BATCH_KEYS}

    jit_train = jax.jit(train_step, in_shardings=(shardings, batch_shardings(batch_shape)),
                        out_shardings=(shardings, replicated), donate_argnums=0)
    # Eval batches may have another shape; they arrive already placed by `put_batch`.
    jit_eval = jax.jit(eval_step, in_shardings=(shardings, None), out_shardings=replicated)
    return StepFunctions(jit_train, jit_eval, shardings, batch_shardings, tx, batch_shape)


def init_state(parts: ModelParts, tx: optax.GradientTransformation, trainable: PureTree,
               frozen: PureTree, shardings: Any) -> TrainState:
    """Place parameters on the mesh and initialise the optimizer state there."""
    trainable = place(trainable, shardings["trainable"])
    frozen = place(frozen, shardings["frozen"])
    opt_state = jax.jit(tx.init, out_shardings=shardings["opt_state"])(trainable)
    step = place(jnp.zeros((), jnp.int32), shardings["step"])
    return {"step": step, "trainable": trainable, "frozen": frozen, "opt_state": opt_state}


def abstract_state(tx: optax.GradientTransformation, trainable: PureTree, frozen: PureTree,
                   shardings: Any) -> TrainState:
    """`init_state`'s result as ShapeDtypeStructs carrying the shardings: no memory, no
    devices, what `train_step.lower` takes ahead of time."""
    def spec(x: Any, sharding: NamedSharding) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    state = {"step": jax.ShapeDtypeStruct((), jnp.int32), "trainable": trainable,
             "frozen": frozen, "opt_state": jax.eval_shape(tx.init, trainable)}
    return jax.tree.map(spec, state, shardings)


def abstract_batch(shardings: dict[str, NamedSharding], shape: tuple[int, int, int]
                   ) -> dict[str, jax.ShapeDtypeStruct]:
    """A train batch of `shape` as ShapeDtypeStructs with the dtypes the data feed yields."""
    return {k: jax.ShapeDtypeStruct(shape, ARRAY_DTYPES[k], sharding=shardings[k])
            for k in BATCH_KEYS}


def place(tree: Any, shardings: Any) -> Any:
    """Put host (or differently sharded) arrays onto `shardings`; works with several processes
    as long as every process holds the same full values."""
    def put(x: Any, sharding: NamedSharding) -> jax.Array:
        if isinstance(x, jax.Array) and x.is_fully_addressable is False:
            return jax.device_put(x, sharding)
        host = np.asarray(jax.device_get(x) if isinstance(x, jax.Array) else x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree, shardings)


def put_batch(batch: dict[str, np.ndarray], shardings: dict[str, NamedSharding],
              global_shape: tuple[int, int, int]) -> Batch:
    """This process's rows (micro_batches, local_rows, length) -> global sharded arrays."""
    return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(batch[k]),
                                                      global_shape) for k in BATCH_KEYS}
