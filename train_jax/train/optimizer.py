"""AdamW with warm-up and constant/linear/cosine decay, global-norm clipping, and no weight
decay on norms and biases (every parameter with fewer than 2 dimensions)."""

from __future__ import annotations

from typing import Any

import jax
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
