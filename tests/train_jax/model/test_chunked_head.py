"""The chunked head loss (the TPU and GPU backends' `head_cross_entropy`) equals the reference
one, values and gradients, for rows that are a multiple of the chunk and rows that are not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from tests.train_jax.model.vjp_check import assert_same_vjp
from train_jax.model.kernels import chunked_head, reference
from train_jax.model.kernels.backend import CHUNKED_HEAD_BACKENDS, kernel_ops
from train_jax.model.loops import unrolled_loops


def _inputs(length: int, dtype, seed: int = 0, vocab: int = 96):
    keys = jax.random.split(jax.random.key(seed), 4)
    hidden = jax.random.normal(keys[0], (2, length, 16), dtype)
    table = jax.random.normal(keys[1], (vocab, 16), jnp.float32)
    targets = jax.random.randint(keys[2], (2, length), 0, vocab)
    cotangent = jax.random.uniform(keys[3], (2, length)) * (jnp.arange(length) % 3 != 0)
    return hidden, table, targets, cotangent


@pytest.mark.parametrize("length", [8, 11, 3])  # two chunks, a padded third, under one chunk
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_and_gradients_equal_the_reference(length, dtype):
    hidden, table, targets, cotangent = _inputs(length, dtype)
    chunked = jax.jit(lambda h, t: chunked_head.head_cross_entropy(h, t, targets, chunk=4))
    losses = chunked(hidden, table)
    assert losses.dtype == jnp.float32 and losses.shape == (2, length)
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    assert_same_vjp(lambda h, t: chunked_head.head_cross_entropy(h, t, targets, chunk=4),
                    lambda h, t: reference.head_cross_entropy(h, t, targets),
                    (hidden, table), cotangent, value_tol=tol, value_atol=tol,
                    grad_tol=1e-5 if dtype == jnp.float32 else 3e-2)


def test_the_table_gradient_stays_in_the_tables_dtype():
    hidden, table, targets, cotangent = _inputs(8, jnp.bfloat16)
    _, vjp = jax.vjp(lambda t: chunked_head.head_cross_entropy(hidden, t, targets, chunk=4), table)
    (d_table,) = vjp(cotangent)
    assert d_table.dtype == jnp.float32  # summed over chunks in float32, not bf16


def test_the_chunks_are_a_loop_unless_unrolled_for_counting():
    hidden, table, targets, _ = _inputs(8, jnp.float32)

    def text() -> str:
        return jax.jit(lambda h: chunked_head.head_cross_entropy(h, table, targets, chunk=4)
                       ).lower(hidden).as_text()

    assert "while" in text()
    with unrolled_loops():
        assert "while" not in text()


@pytest.mark.parametrize("backend", CHUNKED_HEAD_BACKENDS)
def test_accelerator_backends_use_the_chunked_head(backend):
    assert kernel_ops(backend).head_cross_entropy is chunked_head.head_cross_entropy
    assert kernel_ops("reference").head_cross_entropy is reference.head_cross_entropy
