"""The one place the kernel backend is chosen: a setting resolved to a backend, and its ops.

`resolve_backend("auto")` picks by platform (`tpu` on TPU, `gpu` on GPU, `xla_cpu` elsewhere);
`kernel_ops(backend)` returns the bundle of ops the model calls. Every backend offers every op:
one it has no tuned version of is the `reference` one.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import jax

from train_jax.model.kernels.names import KERNEL_BACKENDS, KERNEL_SETTINGS, KernelBackend
from train_jax.model.kernels.platform import target_platform

_AUTO: dict[str, KernelBackend] = {"tpu": "tpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu"}
# Backends whose head loss runs over chunks of positions (`kernels.chunked_head`).
CHUNKED_HEAD_BACKENDS: tuple[KernelBackend, ...] = ("tpu", "gpu")


class UnknownKernelBackendError(ValueError):
    """A kernel setting or backend name that is not one of the valid choices."""


class AttentionFn(Protocol):
    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None,
                 *, rope: tuple[jax.Array, jax.Array] | None = None,
                 causal: bool = True) -> jax.Array: ...


@dataclass(frozen=True)
class KernelOps:
    """The ops of one backend (signatures as in `kernels.reference`)."""

    attention: AttentionFn
    rms_norm: Callable[[jax.Array, jax.Array, float], jax.Array]
    swiglu: Callable[[jax.Array, jax.Array], jax.Array]
    dense: Callable[[jax.Array, jax.Array], jax.Array]
    dense_transposed: Callable[[jax.Array, jax.Array], jax.Array]
    head_cross_entropy: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def resolve_backend(setting: str, platform: str | None = None) -> KernelBackend:
    """The backend a `model.kernels` setting means on `platform` (default: the one compiled for).

    `auto` is `tpu` on TPU, `gpu` on GPU and `xla_cpu` on anything else; a backend name is
    itself. Raises `UnknownKernelBackendError` for anything else.
    """
    if setting not in KERNEL_SETTINGS:
        raise UnknownKernelBackendError(
            f"unknown kernels setting {setting!r}; choose from {', '.join(KERNEL_SETTINGS)}")
    if setting != "auto":
        return cast(KernelBackend, setting)
    return _AUTO.get(platform or target_platform(), "xla_cpu")


@functools.cache
def kernel_ops(backend: str) -> KernelOps:
    """The ops of a resolved `backend` (imported on first use: the TPU one loads Pallas)."""
    from train_jax.model.kernels import reference

    plain = KernelOps(reference.attention, reference.rms_norm, reference.swiglu, reference.dense,
                      reference.dense_transposed, reference.head_cross_entropy)
    if backend == "reference":
        return plain
    if backend == "xla_cpu":
        from train_jax.model.kernels.xla_cpu import attention, dense, head_loss, norm, swiglu

        return KernelOps(attention.attention, norm.rms_norm, swiglu.swiglu, dense.dense,
                         dense.dense_transposed, head_loss.head_cross_entropy)
    if backend in CHUNKED_HEAD_BACKENDS:
        from train_jax.model.kernels import chunked_head

        plain = dataclasses.replace(plain, head_cross_entropy=chunked_head.head_cross_entropy)
    if backend == "tpu":
        from train_jax.model.kernels import tpu

        return dataclasses.replace(plain, attention=tpu.attention)
    if backend == "gpu":
        from train_jax.model.kernels import gpu

        return dataclasses.replace(plain, attention=gpu.attention)
    raise UnknownKernelBackendError(
        f"unknown kernel backend {backend!r}; choose from {', '.join(KERNEL_BACKENDS)}")
