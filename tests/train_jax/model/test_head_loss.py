"""The fused head + cross-entropy equals optax's cross-entropy of the plain logits, values and
gradients, and the model's `token_losses` equals the cross-entropy of its own logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.train_jax.model.vjp_check import assert_same_vjp
from train_jax.model.config import ModelConfig
from train_jax.model.kernels.xla_cpu.head_loss import head_cross_entropy
from train_jax.model.llama import init_model


def _reference(hidden, table, targets):
    logits = jnp.einsum("btd,vd->btv", hidden, table.astype(hidden.dtype),
                        preferred_element_type=jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


def _inputs(dtype, seed=0, vocab=96):
    keys = jax.random.split(jax.random.key(seed), 4)
    hidden = jax.random.normal(keys[0], (2, 7, 16), dtype)
    table = jax.random.normal(keys[1], (vocab, 16), jnp.float32)
    targets = jax.random.randint(keys[2], (2, 7), 0, vocab)
    # A loss mask over a token count, as the train step differentiates it: zeros included.
    cotangent = jax.random.uniform(keys[3], (2, 7)) * (jnp.arange(7) % 3 != 0)
    return hidden, table, targets, cotangent


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_and_gradients_match_autodiff_of_optax(dtype):
    hidden, table, targets, cotangent = _inputs(dtype)
    losses = head_cross_entropy(hidden, table, targets)
    assert losses.dtype == jnp.float32 and losses.shape == (2, 7)
    assert_same_vjp(lambda h, t: head_cross_entropy(h, t, targets), lambda h, t: _reference(h, t, targets),
                    (hidden, table), cotangent, value_tol=1e-6, value_atol=1e-5,
                    grad_tol=1e-5 if dtype == jnp.float32 else 3e-2)


def test_masked_tokens_contribute_no_gradient():
    hidden, table, targets, _ = _inputs(jnp.float32, seed=1)
    only_first = jnp.zeros((2, 7)).at[0, 0].set(1.0)
    _, vjp = jax.vjp(lambda h, t: head_cross_entropy(h, t, targets), hidden, table)
    d_hidden, d_table = vjp(only_first)
    assert np.count_nonzero(np.abs(np.asarray(d_hidden)).sum(-1)) == 1
    # The table gradient is then that one token's outer product, softmax - one_hot by hidden.
    probs = jax.nn.softmax(table @ hidden[0, 0])
    expected = jnp.outer(probs - jax.nn.one_hot(targets[0, 0], table.shape[0]), hidden[0, 0])
    np.testing.assert_allclose(d_table, expected, rtol=1e-5, atol=1e-6)


def test_an_undifferentiated_table_costs_no_table_gradient():
    # LoRA freezes the head: its table-gradient product (formed transposed, (D, V)) must be dead
    # code that XLA removes.
    hidden, table, targets, _ = _inputs(jnp.float32, vocab=200)

    def product_shapes(grad_fn, *args):
        hlo = jax.jit(grad_fn).lower(*args).compile().as_text()
        return [line.split("=", 1)[1].split("dot(")[0] for line in hlo.splitlines() if " dot(" in line]

    table_grad = ("[16,200]", "[200,16]")
    with_table = product_shapes(jax.grad(lambda h, t: head_cross_entropy(h, t, targets).sum(),
                                         argnums=(0, 1)), hidden, table)
    assert [d for d in with_table if any(s in d for s in table_grad)], with_table
    without = product_shapes(jax.grad(lambda h: head_cross_entropy(h, table, targets).sum()), hidden)
    assert without, "the logits / hidden-gradient products are missing"
    assert not [d for d in without if any(s in d for s in table_grad)], without


@pytest.mark.parametrize("tied", [True, False])
def test_model_token_losses_equal_cross_entropy_of_its_logits(tied):
    cfg = ModelConfig(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=48,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=8, max_position_embeddings=64, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=tied)
    model = init_model(cfg, seed=3)
    ids = jax.random.randint(jax.random.key(4), (2, 9), 0, 64)
    targets = jnp.roll(ids, -1, axis=1)
    segments = jnp.array([[1] * 5 + [2] * 4, [1] * 9])
    positions = jnp.array([list(range(5)) + list(range(4)), list(range(9))])
    want = optax.softmax_cross_entropy_with_integer_labels(model(ids, positions, segments), targets)
    got = model.token_losses(ids, targets, positions, segments)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)

    # And so are the parameter gradients of the summed loss.
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p, fused):
        m = nnx.merge(graphdef, p)
        ce = (m.token_losses(ids, targets, positions, segments) if fused else
              optax.softmax_cross_entropy_with_integer_labels(m(ids, positions, segments), targets))
        return ce.sum()

    got_grads, want_grads = jax.grad(loss)(params, True), jax.grad(loss)(params, False)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
