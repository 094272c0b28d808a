"""The model on each kernel backend and remat policy: same losses and gradients, same training
steps, and the resolved backend logged and recorded for the run's provenance."""

from __future__ import annotations

import contextlib
import functools
import io
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from tests.train_jax.model.packed import packed_segments, segment_positions
from tests.train_jax.train.helpers import TINY_HF, random_batch, run_step, setup, tiny_config
from train_jax.config.run_config import MeshConfig, MethodConfig, ModelSpec, OptimizerConfig
from train_jax.model.config import ModelConfig
from train_jax.model.kernels.backend import resolve_backend
from train_jax.model.kernels.platform import warn_fallback
from train_jax.model.llama import init_model

LENGTH = 16
# Adam's first update is about sign(g) with the default eps, which flips for gradients near 0
# under any change of summation order; a larger eps keeps the update proportional (test_step.py).
WELL_CONDITIONED = OptimizerConfig(learning_rate=1e-2, schedule="constant", weight_decay=0.1,
                                   eps=1e-3)


def _loss_fn(kernels: str, remat: str, length: int = LENGTH, *, scan_layers: bool = False,
             lora: bool = False, **arch):
    """A jittable loss of the tiny model's parameters (mean token loss of packed rows); `lora`
    adds adapters on q, v and down with a non-zero B, so they change the output and get
    gradients of their own."""
    from train_jax.model.config import LoraSpec

    spec = LoraSpec(rank=4, targets=("q_proj", "v_proj", "down_proj")) if lora else None
    cfg = ModelConfig.from_hf_config({**TINY_HF, **arch}, kernels=kernels, remat=remat,
                                     scan_layers=scan_layers, lora=spec)
    model = init_model(cfg, seed=0)
    if lora:
        for block in model.layers:
            for proj in (block.self_attn.q_proj, block.self_attn.v_proj, block.mlp.down_proj):
                proj.lora_b[...] = 0.1 * jnp.ones_like(proj.lora_b[...])
    graphdef, params = nnx.split(model, nnx.Param)
    segments = jnp.asarray(packed_segments(length))
    positions = jnp.asarray(segment_positions(packed_segments(length)))
    ids = jax.random.randint(jax.random.key(5), (2, length), 0, 256)
    targets = jnp.roll(ids, -1, axis=1)

    def loss(p):
        losses = nnx.merge(graphdef, p).token_losses(ids, targets, positions, segments)
        return jnp.sum(losses * (segments > 0)) / jnp.sum(segments > 0)

    return loss, params


@functools.cache
def _loss_and_grads(kernels: str, remat: str, length: int = LENGTH, head_dim: int | None = None,
                    **options):
    arch = {} if head_dim is None else {"head_dim": head_dim}
    loss, params = _loss_fn(kernels, remat, length, **options, **arch)
    return jax.device_get(jax.jit(jax.value_and_grad(loss))(params))


def _assert_same_loss_and_grads(got, want, rtol: float):
    (loss, grads), (want_loss, want_grads) = got, want
    assert abs(float(loss) - float(want_loss)) <= rtol * abs(float(want_loss))
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * float(np.abs(w).max()))


@pytest.mark.parametrize("kernels", ["reference", "xla_cpu"])
@pytest.mark.parametrize("policy", ["full", "save_dots", "save_qkvo"])
def test_every_remat_policy_gives_the_loss_and_gradients_of_none(policy, kernels):
    _assert_same_loss_and_grads(_loss_and_grads(kernels, policy),
                                _loss_and_grads(kernels, "none"), rtol=1e-6)


def _residuals(policy: str) -> list[str]:
    """What the backward pass of the loss keeps, one line per array (jax's own listing)."""
    loss, params = _loss_fn("reference", policy)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_saved_residuals(loss, params)
    return out.getvalue().splitlines()


def test_remat_policies_keep_what_they_say():
    none, full, qkvo = _residuals("none"), _residuals("full"), _residuals("save_qkvo")
    named = [r for r in qkvo if "named" in r]
    assert len(full) < len(qkvo) < len(none)
    assert sorted(r.split("'")[1] for r in named) == sorted(["q_proj", "k_proj", "v_proj",
                                                             "o_proj"] * 2)  # 2 layers
    assert not [r for r in full if "named" in r]
    assert len(full) < len(_residuals("save_dots")) < len(none)


@pytest.mark.parametrize("backend", ["xla_cpu", "tpu", "gpu"])
def test_the_model_on_each_backend_has_the_loss_and_gradients_of_reference(backend, caplog):
    # head_dim 64 and 128 tokens: the shapes splash takes, so the TPU kernel really runs.
    warn_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="train_jax.model.kernels.platform"):
        got = _loss_and_grads(backend, "none", length=128, head_dim=64)
    assert "kernels tpu" not in caplog.text
    _assert_same_loss_and_grads(got, _loss_and_grads("reference", "none", length=128,
                                                     head_dim=64), rtol=1e-5)


def test_two_train_steps_with_reference_and_auto_agree():
    rng = np.random.default_rng(3)
    batches = [random_batch(rng, 1, 8, LENGTH) for _ in range(2)]
    shape = (1, 8, LENGTH)
    losses = {}
    for setting in ("reference", "auto"):
        cfg = tiny_config(kernels=resolve_backend(setting))
        _, steps, state = setup(MeshConfig(1, 1, 1), jax.devices()[:1], model_cfg=cfg,
                                opt=WELL_CONDITIONED, batch_shape=shape)
        losses[setting] = []
        for batch in batches:
            state, metrics = run_step(steps, state, batch, shape)
            losses[setting].append(float(metrics["loss"]))
    assert resolve_backend("auto") == "xla_cpu"  # so the comparison is with the tuned ops
    np.testing.assert_allclose(losses["auto"], losses["reference"], rtol=1e-5)
    assert losses["reference"][0] != losses["reference"][1]  # the first step changed the model


def test_model_config_takes_only_a_resolved_backend_and_a_remat_policy():
    with pytest.raises(ValueError, match="resolve 'auto' with resolve_backend"):
        tiny_config(kernels="auto")
    with pytest.raises(ValueError, match="remat True is not a policy; choose from"):
        tiny_config(remat=True)
    assert (tiny_config().kernels, tiny_config().remat) == ("xla_cpu", "none")
    from train_jax.model.config import LoraSpec

    with pytest.raises(ValueError, match="scan_layers does not support LoRA dropout > 0"):
        tiny_config(scan_layers=True, lora=LoraSpec(dropout=0.1))


def test_training_logs_the_resolved_backend_and_records_it_for_provenance(tmp_path, caplog):
    from tests.fixtures.tiny_model import build_tiny_hf_model
    from train_jax import checkpoint as ckpt
    from train_jax.provenance import build_provenance, render_model_card
    from train_jax.train.model_init import load_initial_model

    hf_dir = build_tiny_hf_model(tmp_path / "hf", num_hidden_layers=1)
    with caplog.at_level(logging.INFO, logger="train_jax.train.model_init"):
        initial = load_initial_model(ModelSpec(path=str(hf_dir)), MethodConfig(), seed=0)
    assert "kernels: auto -> xla_cpu (platform cpu)" in caplog.text
    assert initial.cfg.kernels == "xla_cpu"
    record = {"setting": "auto", "backend": "xla_cpu", "platform": "cpu"}
    assert initial.source["kernels"] == record

    run_dir = tmp_path / "run"
    ckpt.write_checkpoint_info(run_dir / "checkpoints", initial.cfg, source=initial.source)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"train": {"steps": 1}}))
    provenance = build_provenance(run_dir / "checkpoints")
    assert provenance["kernels"] == record
    assert provenance["source_model"]["kind"] == "hf" and "kernels" not in provenance["source_model"]
    assert "- kernels: xla_cpu (setting auto, platform cpu)" in render_model_card(provenance)


# (xla_cpu, unrolled vs scanned, is in the sharded train-step test below.)
@pytest.mark.parametrize("kernels,remat,lora", [("reference", "save_qkvo", True),
                                                ("tpu", "full", False)])
def test_the_layer_scan_gives_the_loss_and_gradients_of_the_unrolled_blocks(kernels, remat, lora):
    three = {"lora": lora, "num_hidden_layers": 3}
    _assert_same_loss_and_grads(_loss_and_grads(kernels, remat, scan_layers=True, **three),
                                _loss_and_grads(kernels, remat, scan_layers=False, **three),
                                rtol=1e-6)


def test_the_layer_scan_is_one_loop_over_the_blocks():
    cfg = ModelConfig.from_hf_config({**TINY_HF, "num_hidden_layers": 3}, kernels="reference",
                                     scan_layers=True)
    graphdef, params = nnx.split(init_model(cfg, seed=0), nnx.Param)
    ids = jnp.zeros((1, LENGTH), jnp.int32)
    text = jax.jit(lambda p: nnx.merge(graphdef, p).token_losses(ids, ids)).lower(params).as_text()
    assert text.count("stablehlo.while") == 1


def test_sharded_train_steps_with_the_layer_scan_equal_the_unrolled_ones():
    # fsdp and tensor axes over the 8 host devices: the stacked weights are sharded like the
    # per-block ones they come from, and the optimizer sees the same gradients.
    rng = np.random.default_rng(4)
    batches = [random_batch(rng, 1, 8, LENGTH) for _ in range(2)]
    shape = (1, 8, LENGTH)
    losses, params = {}, {}
    for scan in (False, True):
        _, steps, state = setup(MeshConfig(2, 2, 2), jax.devices()[:8],
                                model_cfg=tiny_config(scan_layers=scan), opt=WELL_CONDITIONED,
                                batch_shape=shape)
        losses[scan] = []
        for batch in batches:
            state, metrics = run_step(steps, state, batch, shape)
            losses[scan].append(float(metrics["loss"]))
        params[scan] = jax.device_get(state["trainable"])
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)
    for got, want in zip(jax.tree.leaves(params[True]), jax.tree.leaves(params[False]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
