"""Shared check for ops with a hand-written backward: same values and same VJP as a reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np


def _as_f32(x: jax.Array) -> np.ndarray:
    # numpy compares bfloat16 poorly; every compute dtype here widens to float32 exactly.
    return np.asarray(x, np.float32)


def assert_same_vjp(fn: Callable, reference: Callable, args: Sequence[jax.Array], cotangent: jax.Array, *,
                    value_tol: float = 1e-6, value_atol: float | None = None, grad_tol: float = 1e-5) -> None:
    """`fn` and `reference` agree on their value at `args` and on every input's gradient, which
    must also have the reference's dtype and shape. Values compare with relative tolerance
    `value_tol` and absolute tolerance `value_atol` (default: the same), gradients with
    `grad_tol` for both."""
    got, vjp_got = jax.vjp(fn, *args)
    want, vjp_want = jax.vjp(reference, *args)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(_as_f32(got), _as_f32(want), rtol=value_tol,
                               atol=value_tol if value_atol is None else value_atol)
    for g, w in zip(vjp_got(cotangent), vjp_want(cotangent), strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(_as_f32(g), _as_f32(w), rtol=grad_tol, atol=grad_tol)
