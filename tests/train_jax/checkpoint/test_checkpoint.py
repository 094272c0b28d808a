"""The checkpoint directory: info file, assets, orbax steps, restore of `params` only."""

from __future__ import annotations

import json

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tests.fixtures.tiny_model import TINY_CONFIG, TINYSTORIES_DIR
from train_jax import checkpoint as ckpt
from train_jax.model.config import LoraSpec, ModelConfig


def _params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "embed_tokens": {"embedding": rng.standard_normal((16, 8)).astype(ml_dtypes.bfloat16)},
        "layers": {i: {"mlp": {"up_proj": {"kernel": rng.standard_normal((8, 24)).astype(np.float32)}}}
                   for i in range(3)},
        "norm": {"scale": rng.standard_normal(8).astype(np.float32)},
    }


def _assert_same(a: dict, b: dict) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_write_then_restore_is_bit_exact_with_info_and_assets(tmp_path):
    cfg = ModelConfig.from_hf_config(TINY_CONFIG)
    params = _params()
    ckpt.write_model_checkpoint(tmp_path / "c", params, cfg, assets_from=TINYSTORIES_DIR,
                                source={"hf_dir": "x"})
    assert ckpt.is_jaxtune_checkpoint(tmp_path / "c")
    info = ckpt.read_checkpoint_info(tmp_path / "c")
    assert info.model_config == cfg.to_hf_config()
    assert info.lora is None and info.source == {"hf_dir": "x"}
    assert (tmp_path / "c" / "hf_assets" / "tokenizer.json").is_file()
    assert (tmp_path / "c" / "hf_assets" / "generation_config.json").is_file()
    assert ckpt.committed_steps(tmp_path / "c") == [0]
    restored = ckpt.restore_params(tmp_path / "c")
    assert isinstance(restored["layers"][0]["mlp"]["up_proj"]["kernel"], np.ndarray)
    _assert_same(restored, params)


def test_restores_only_params_of_latest_trainer_step(tmp_path):
    cfg = ModelConfig.from_hf_config(TINY_CONFIG, lora=LoraSpec(rank=4, alpha=8.0, targets=("q_proj",)))
    ckpt.write_checkpoint_info(tmp_path, cfg)
    assert ckpt.read_checkpoint_info(tmp_path).lora == cfg.lora
    with ckpt.checkpoint_manager(tmp_path) as manager:
        for step in (10, 20):
            manager.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(_params(step)),
                opt_state=ocp.args.StandardSave({"mu": np.zeros(4)}),
                run_config=ocp.args.JsonSave({"lr": 1e-3}),
            ))
        manager.wait_until_finished()
    # A step orbax has not finalised (its temporary folder) must not be listed nor restored.
    (tmp_path / "steps" / "30.orbax-checkpoint-tmp-1234").mkdir()
    assert ckpt.committed_steps(tmp_path) == [10, 20]
    _assert_same(ckpt.restore_params(tmp_path), _params(20))
    _assert_same(ckpt.restore_params(tmp_path, step=10), _params(10))
    with pytest.raises(ckpt.NoCommittedStepError, match=r"no committed step 15; committed steps: \[10, 20\]"):
        ckpt.restore_params(tmp_path, step=15)


def test_restore_onto_target_shardings(tmp_path):
    params = _params()
    ckpt.write_model_checkpoint(tmp_path, params, ModelConfig.from_hf_config(TINY_CONFIG))
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(8), ("data",))
    row = NamedSharding(mesh, PartitionSpec("data", None))
    rep = NamedSharding(mesh, PartitionSpec())
    shardings = jax.tree.map(lambda x: row if x.ndim == 2 else rep, params)
    restored = ckpt.restore_params(tmp_path, target_shardings=shardings)
    kernel = restored["layers"][2]["mlp"]["up_proj"]["kernel"]
    assert isinstance(kernel, jax.Array) and kernel.sharding == row
    _assert_same(restored, params)


def test_clear_errors(tmp_path):
    with pytest.raises(ckpt.NotACheckpointError, match="does not exist"):
        ckpt.read_checkpoint_info(tmp_path / "missing")
    with pytest.raises(ckpt.NotACheckpointError, match="HF model folder"):
        ckpt.restore_params(TINYSTORIES_DIR)
    ckpt.write_checkpoint_info(tmp_path, dict(TINY_CONFIG))
    with pytest.raises(ckpt.NoCommittedStepError, match="has no committed step"):
        ckpt.restore_params(tmp_path)
    (tmp_path / "jaxtune_checkpoint.json").write_text(json.dumps({"format": 99, "model_config": {}}))
    with pytest.raises(ckpt.CheckpointError, match="format 99"):
        ckpt.read_checkpoint_info(tmp_path)
    (tmp_path / "jaxtune_checkpoint.json").write_text("{not json")
    with pytest.raises(ckpt.NotACheckpointError, match="not valid JSON"):
        ckpt.read_checkpoint_info(tmp_path)


def test_refuses_to_overwrite_a_step(tmp_path):
    cfg = ModelConfig.from_hf_config(TINY_CONFIG)
    ckpt.write_model_checkpoint(tmp_path, _params(), cfg)
    with pytest.raises(ckpt.CheckpointError, match="already has step 0"):
        ckpt.write_model_checkpoint(tmp_path, _params(), cfg)


@pytest.mark.parametrize("lora", [None, LoraSpec(rank=4, alpha=8.0, targets=("q_proj", "down_proj"))])
def test_host_restore_reads_with_tensorstore_not_orbax(tmp_path, monkeypatch, lora):
    from flax import nnx

    from train_jax.checkpoint import store
    from train_jax.model.llama import LlamaForCausalLM

    cfg = ModelConfig.from_hf_config(TINY_CONFIG, lora=lora)
    model = LlamaForCausalLM(cfg, rngs=nnx.Rngs(3))
    params = jax.tree.map(np.asarray, nnx.state(model, nnx.Param).to_pure_dict())
    ckpt.write_model_checkpoint(tmp_path, params, cfg, lora=lora)

    def orbax_path_taken(*args, **kwargs):
        raise AssertionError("a host restore of a dict tree of arrays went through orbax")

    monkeypatch.setattr(store, "_restore_from_metadata", orbax_path_taken)
    restored = ckpt.restore_params(tmp_path)
    assert ("lora_a" in restored["layers"][1]["mlp"]["down_proj"]) == (lora is not None)
    _assert_same(restored, params)
    stored = ckpt.open_params(tmp_path)
    kernel = ("layers", 1, "mlp", "down_proj", "kernel")
    assert stored.shapes[kernel] == params["layers"][1]["mlp"]["down_proj"]["kernel"].shape
    out = np.empty(stored.shapes[kernel], stored.dtypes[kernel])
    stored.read_into(kernel, out).result()
    assert out.tobytes() == params["layers"][1]["mlp"]["down_proj"]["kernel"].tobytes()
    with pytest.raises(ValueError, match=r"layers\.1\.mlp\.down_proj\.kernel is .*, not"):
        stored.read_into(kernel, out.reshape(-1))


def test_sharded_trainer_checkpoint_restores_to_host_exactly(tmp_path, monkeypatch):
    # As the trainer saves: jax arrays sharded over the mesh, orbax defaults (compressed).
    from train_jax.checkpoint import store

    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    shardings = {"embed_tokens": {"embedding": NamedSharding(mesh, PartitionSpec("data", "model"))},
                 "layers": {i: {"mlp": {"up_proj": {"kernel": NamedSharding(mesh, PartitionSpec(None, "data"))}}}
                            for i in range(3)},
                 "norm": {"scale": NamedSharding(mesh, PartitionSpec())}}
    params = _params(5)
    on_mesh = jax.tree.map(jax.device_put, params, shardings)
    ckpt.write_checkpoint_info(tmp_path, ModelConfig.from_hf_config(TINY_CONFIG))
    with ckpt.checkpoint_manager(tmp_path) as manager:
        manager.save(7, args=ocp.args.Composite(params=ocp.args.StandardSave(on_mesh)))
        manager.wait_until_finished()
    monkeypatch.setattr(store, "_restore_from_metadata", None)  # the tensorstore path only
    _assert_same(ckpt.restore_params(tmp_path), params)


def test_items_the_tensorstore_reader_does_not_handle_restore_through_orbax(tmp_path):
    params = {**_params(), "step_count": 3, "layers_list": [np.arange(4.0), np.ones(2, np.float32)]}
    ckpt.write_model_checkpoint(tmp_path, params, ModelConfig.from_hf_config(TINY_CONFIG))
    assert ckpt.open_params(tmp_path) is None
    restored = ckpt.restore_params(tmp_path)
    assert int(restored["step_count"]) == 3
    _assert_same(restored["layers"], params["layers"])
    np.testing.assert_array_equal(restored["layers_list"][0], np.arange(4.0))
