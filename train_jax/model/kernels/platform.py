"""The platform the ops are compiled for, and the warning a kernel gives when it steps aside.

The platform is `jax.default_backend()` unless a caller compiling ahead of time for another
one (a TPU topology from a CPU host) says so with `compiling_for("tpu")`: the TPU kernel then
lowers to Mosaic instead of Pallas' interpreter, and `auto` resolves to `tpu`.
"""

from __future__ import annotations

import functools
import logging
from contextlib import AbstractContextManager
from contextvars import ContextVar

import jax

from train_jax.model import axes

logger = logging.getLogger(__name__)

_TARGET: ContextVar[str | None] = ContextVar("kernel_target_platform", default=None)


def target_platform() -> str:
    """The platform being compiled for ("cpu", "gpu", "tpu", ...); read while tracing."""
    return _TARGET.get() or jax.default_backend()


def compiling_for(platform: str) -> AbstractContextManager[None]:
    """Within this context, kernels trace for `platform` rather than the default backend."""
    return axes.bound(_TARGET, platform)


@functools.cache
def warn_fallback(backend: str, reason: str, instead: str = "reference") -> None:
    """Log, once per (backend, reason), that `backend` runs an op as `instead` because `reason`."""
    logger.warning("kernels %s: %s; this call runs the %s implementation", backend, reason, instead)
