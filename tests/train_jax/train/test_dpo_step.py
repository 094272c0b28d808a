"""The jitted DPO step: it learns preferences with every method, its LoRA reference is the
base model exactly, and gradient accumulation equals one large batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.train_jax.train.dpo_helpers import build, dpo_config, host, placed, synthetic_pairs
from tests.train_jax.train.helpers import TINY_HF
from train_jax.model.config import ModelConfig
from train_jax.model.llama import init_model
from train_jax.train.dpo.step import reference_model, sequence_logps

LENGTH = 24


@pytest.mark.parametrize(("method", "lr"), [("full", 3e-3), ("lora", 3e-2), ("freeze", 3e-3)])
def test_training_flips_the_preferred_completion(method, lr):
    cfg = dpo_config(method, lr=lr, beta=0.5)
    steps, state, reference, _ = build(cfg)
    batch = placed(steps, synthetic_pairs(np.random.default_rng(0), 8, LENGTH))
    history = []
    for _ in range(15):
        state, metrics = steps.train_step(state, reference, batch)
        history.append(host(metrics))
    first, last = history[0], history[-1]
    # The policy starts as the reference: no margin, and it prefers the (shorter) rejected ones.
    assert first["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert first["chosen_logp"] - first["rejected_logp"] < 0
    assert first["loss"] == pytest.approx(np.log(2.0), abs=1e-5)  # -log sigmoid(0)
    assert last["chosen_logp"] - last["rejected_logp"] > 0  # now the chosen one is preferred
    assert last["reward_margin"] > 0.5 and last["accuracy"] == 1.0
    assert last["loss"] < 0.5 * first["loss"]


def test_lora_reference_with_adapters_off_is_the_base_model():
    cfg = dpo_config("lora")
    steps, state, reference, parts = build(cfg)
    assert reference == {}  # no second copy of the weights
    # Adapters that do something: B is zero at initialisation, so give it values.
    rng = np.random.default_rng(1)
    state["trainable"] = jax.tree.map(
        lambda x: jnp.asarray(rng.normal(0, 0.5, x.shape), x.dtype), state["trainable"])
    batch = jax.tree.map(lambda x: x[0], placed(steps, synthetic_pairs(rng, 8, LENGTH)))

    base_model = init_model(ModelConfig.from_hf_config(TINY_HF), seed=5)
    base_params = _without_adapters(host(state["frozen"]))
    nnx.update(base_model, base_params)

    def logps(which):
        @jax.jit
        def run(st, mb):
            if which == "reference":
                model = reference_model(parts, st, {})
            elif which == "policy":
                model = parts.merge(st["trainable"], st["frozen"], train=False)
            else:
                model = base_model
            return sequence_logps(model, mesh, mb)
        return np.asarray(run(state, batch))

    mesh = _mesh_of(state)
    ref, base, policy = logps("reference"), logps("base"), logps("policy")
    np.testing.assert_array_equal(ref, base)  # exactly, not approximately
    assert np.abs(policy - base).max() > 1e-2  # the adapters are really on in the policy


def test_micro_batches_equal_one_large_batch():
    batch = synthetic_pairs(np.random.default_rng(2), 8, LENGTH)
    out = {}
    for micro in (1, 2):
        steps, state, reference, _ = build(dpo_config("lora", micro=micro, mesh=(1, 2, 1), eps=1e-3),
                                           devices=jax.devices()[:2])
        state, metrics = steps.train_step(state, reference, placed(steps, batch))
        state, metrics = steps.train_step(state, reference, placed(steps, batch))
        out[micro] = (host(metrics), host(state["trainable"]))
    for key in ("loss", "reward_margin", "accuracy", "chosen_logp", "grad_norm"):
        assert out[2][0][key] == pytest.approx(out[1][0][key], rel=1e-5, abs=1e-6), key
    for a, b in zip(jax.tree.leaves(out[1][1]), jax.tree.leaves(out[2][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_sharded_step_equals_one_device():
    batch = synthetic_pairs(np.random.default_rng(3), 8, LENGTH)
    results = []
    for mesh, devices in (((2, 2, 2), jax.devices()), ((1, 1, 1), jax.devices()[:1])):
        steps, state, reference, _ = build(dpo_config("full", mesh=mesh, eps=1e-3), devices=devices)
        state, metrics = steps.train_step(state, reference, placed(steps, batch))
        results.append((host(metrics), host(state["trainable"])))
    (m8, p8), (m1, p1) = results
    for key in ("loss", "reward_margin", "chosen_logp", "rejected_logp", "grad_norm"):
        assert m8[key] == pytest.approx(m1[key], rel=1e-5, abs=1e-6), key
    for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _without_adapters(tree):
    return {k: _without_adapters(v) if isinstance(v, dict) else v
            for k, v in tree.items() if k not in ("lora_a", "lora_b")}


def _mesh_of(state):
    return jax.tree.leaves(state["frozen"])[0].sharding.mesh

