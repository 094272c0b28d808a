"""AdamW with warm-up and constant/linear/cosine/warmup-stable-decay schedules, global-norm
clipping, and no weight decay on norms and biases (every parameter with fewer than 2 dimensions).

Every schedule is warm-up (linear from 0 over `warmup_steps`), then the peak rate, then a decay
to `min_lr_ratio` x peak that ends at the run's last step. Where the decay starts is
`decay_start`: right after warm-up for `linear` and `cosine`, the last `decay_fraction` of the
steps for `wsd`, and never before the step a time budget fixed the run's length
(`train_jax.train.schedule_plan`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from train_jax.config.run_config import OptimizerConfig


def default_decay_start(cfg: OptimizerConfig, total_steps: int) -> int:
    """The step the decay starts at in a run of `total_steps` whose length was known up front."""
    if cfg.schedule == "wsd":
        decay_steps = max(1, math.ceil(cfg.decay_fraction * total_steps))
        return max(total_steps - decay_steps, cfg.warmup_steps)
    return cfg.warmup_steps  # linear and cosine decay from the end of warm-up (constant: never)


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int,
                           decay_start: int | None = None) -> optax.Schedule:
    """Linear warm-up from 0 over `warmup_steps`, the peak rate until `decay_start` (default:
    `default_decay_start`), then the configured decay, reaching its final rate at `total_steps`.

    A decay start at or before the end of warm-up gives exactly the warm-up + decay schedules
    jaxtune always built for `linear` and `cosine`.
    """
    peak, warmup = cfg.learning_rate, cfg.warmup_steps
    start = default_decay_start(cfg, total_steps) if decay_start is None else decay_start
    start = max(start, warmup)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.schedule != "wsd" and start == warmup:
        after = _decay(cfg.schedule, cfg, max(total_steps - warmup, 1))
    else:
        shape = cfg.decay_shape if cfg.schedule == "wsd" else cfg.schedule
        decay = _decay(shape, cfg, max(total_steps - start, 1))
        after = (decay if start == warmup else
                 optax.join_schedules([optax.constant_schedule(peak), decay], [start - warmup]))
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def _decay(shape: str, cfg: OptimizerConfig, steps: int) -> optax.Schedule:
    """From the peak rate at count 0 to `min_lr_ratio` x peak at count `steps` (held after)."""
    peak = cfg.learning_rate
    final = peak * cfg.min_lr_ratio
    if shape == "linear":
        return optax.linear_schedule(peak, final, steps)
    if shape == "cosine":
        return optax.cosine_decay_schedule(peak, steps, alpha=cfg.min_lr_ratio)
    # 1-sqrt (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
    # Training Durations"): the cooldown shape they found best for a short final decay.

    def one_minus_sqrt(count: Any) -> jax.Array:
        t = jnp.clip(jnp.asarray(count, jnp.float32) / steps, 0.0, 1.0)
        return final + (peak - final) * (1.0 - jnp.sqrt(t))

    return one_minus_sqrt


def decay_mask(params: Any) -> Any:
    """True for matrices (kernels, embeddings, LoRA factors); False for norm scales and biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def build_optimizer(cfg: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optax chain: optional global-norm clipping, then AdamW with masked weight decay.

    Clipping is optax's own: a hand-written scalar-scale version measured under 1% of the step
    (docs/BENCHMARKS.md#training, "Global-norm clipping as one scalar scale"). Its state is
    optax's empty state either way, so checkpoints of both versions restore.
    """
    parts = []
    if cfg.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
