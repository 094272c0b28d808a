"""AdamW with warm-up and constant/linear/cosine decay, global-norm clipping, and no weight
decay on norms and biases (every parameter with fewer than 2 dimensions)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from train_jax.config.run_config import OptimizerConfig


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 over `warmup_steps`, then the configured shape until `total_steps`."""
    peak, warmup = cfg.learning_rate, cfg.warmup_steps
    final = peak * cfg.min_lr_ratio
    decay_steps = max(total_steps - warmup, 1)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(peak, final, decay_steps)
    else:
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.min_lr_ratio)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params: Any) -> Any:
    """True for matrices (kernels, embeddings, LoRA factors); False for norm scales and biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Scale all updates by min(1, max_norm / global norm): `optax.clip_by_global_norm`'s result.

    optax selects, per element, between the update and its clipped value, so XLA:CPU writes a
    clipped copy of every gradient and both Adam moments then read the gradient and that copy.
    A scalar scale fuses into the moment updates instead: the bf16 SmolLM2 train step took
    1.412 s against 1.423 s (one process, alternating steps; docs/BENCHMARKS.md#training).
    Below the threshold the scale is exactly 1; above it the result differs from optax's
    (g / norm) * max_norm only in rounding. The state is optax's empty state, as optax's is,
    so checkpoints written with either restore with the other.
    """
    def update(updates: Any, state: optax.EmptyState, params: Any = None
               ) -> tuple[Any, optax.EmptyState]:
        del params
        norm = optax.global_norm(updates)
        scale = jnp.where(norm < max_norm, 1.0, max_norm / norm)
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update)


def build_optimizer(cfg: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optax chain: optional global-norm clipping, then AdamW with masked weight decay."""
    parts = []
    if cfg.clip_norm is not None:
        parts.append(clip_by_global_norm(cfg.clip_norm))
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
