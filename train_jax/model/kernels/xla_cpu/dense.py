"""Matrix products of activations with weights, with a hand-written backward pass.

`dense(x, kernel)` is `x @ kernel` and `dense_transposed(x, table)` is `x @ table.T` (the tied
LM head). Their gradients are the textbook pair: dx = dy @ W^T, and dW = X^T dY over all
leading (batch, time) positions flattened into one contraction. Every product accumulates in
float32 and is rounded to the input dtype once.

Why not let autodiff derive them: on XLA:CPU, the derived backward of a SwiGLU MLP fuses the
transposition of dY into the elementwise kernel that produces it, and that transposed write
ran at a fraction of memory speed. Written this way, the products keep the layouts XLA's dot
kernels take directly (docs/BENCHMARKS.md#training, "The first hand-written ops"). The values
are the same products autodiff would form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int], dtype: jnp.dtype) -> jax.Array:
    # Accumulate in float32 whatever the inputs: with bfloat16 inputs XLA:CPU then takes its
    # fast bf16 dot-product kernels (avx512_bf16), which a bf16 result does not get
    # (docs/BENCHMARKS.md#training), and TPUs and GPUs accumulate bf16 products in float32 anyway.
    out = jax.lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                              preferred_element_type=jnp.float32)
    return out.astype(dtype)


def _weight_grad(x: jax.Array, dy: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """(in, out) = X^T dY, contracting every leading (batch, time) position at once."""
    # X^T is materialised, feature dimension first, so that the product contracts the last
    # dimension of its left operand. Contracting X's leading dimension instead, XLA:CPU's
    # bf16 kernels (YNNPACK) refuse the product and it runs upcast to float32, far slower
    # (docs/BENCHMARKS.md#training, "Every product on XLA:CPU's bf16 kernels"). X must keep
    # its (batch, time) dimensions here: a 2-D transpose is folded into the product as a
    # layout change, and the product is refused again.
    x3 = x if x.ndim >= 3 else x[None]
    dy3 = dy if dy.ndim >= 3 else dy[None]
    lead = tuple(range(x3.ndim - 1))
    x_t = jnp.transpose(x3, (x3.ndim - 1, *lead))  # (in, *lead)
    out = jax.lax.dot_general(x_t, dy3, ((tuple(d + 1 for d in lead), lead), ((), ())),
                              preferred_element_type=jnp.float32)
    return out.astype(dtype)


@jax.custom_vjp
def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x @ kernel` in x's dtype; kernel is (in, out) and is cast to x's dtype."""
    return _matmul(x, kernel.astype(x.dtype), (x.ndim - 1, 0), x.dtype)


def _dense_fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return dense(x, kernel), (x, kernel)


def _dense_bwd(res: tuple[jax.Array, jax.Array], dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = res
    dx = _matmul(dy, kernel.astype(dy.dtype), (dy.ndim - 1, 1), x.dtype)
    return dx, _weight_grad(x, dy, kernel.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)


@jax.custom_vjp
def dense_transposed(x: jax.Array, table: jax.Array) -> jax.Array:
    """`x @ table.T` in x's dtype; table is (out, in), e.g. a tied embedding used as LM head."""
    return _matmul(x, table.astype(x.dtype), (x.ndim - 1, 1), x.dtype)


def _dense_transposed_fwd(x: jax.Array, table: jax.Array
                          ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return dense_transposed(x, table), (x, table)


def _dense_transposed_bwd(res: tuple[jax.Array, jax.Array], dy: jax.Array
                          ) -> tuple[jax.Array, jax.Array]:
    x, table = res
    dx = _matmul(dy, table.astype(dy.dtype), (dy.ndim - 1, 0), x.dtype)
    return dx, _weight_grad(dy, x, table.dtype)  # (out, in) = dY^T X


dense_transposed.defvjp(_dense_transposed_fwd, _dense_transposed_bwd)
