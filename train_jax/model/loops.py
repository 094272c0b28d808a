"""How the model's own loops (the layer scan, the chunked head loss) lower.

As loops to run them. Unrolled, inside `unrolled_loops()`, for counting: XLA's cost analysis
counts a loop body once, so the plan's FLOPs per step lower the step once more unrolled
(`train_jax.train.tpu_compile`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import ContextVar

from train_jax.model import axes

_UNROLLED: ContextVar[bool] = ContextVar("model_loops_unrolled", default=False)


def unrolled_loops() -> AbstractContextManager[None]:
    """Within this context the model's `lax.scan`s trace fully unrolled."""
    return axes.bound(_UNROLLED, True)


def scan_unroll() -> bool | int:
    """The `unroll` argument of the model's `lax.scan`s; read while tracing."""
    return True if _UNROLLED.get() else 1
