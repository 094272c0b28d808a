"""LoRA and frozen-layer training update only what they should; LoRA exports merged."""

from __future__ import annotations

import jax
import numpy as np

from tests.train_jax.train.helpers import host, random_batch, run_step, setup, tiny_config
from tests.train_jax.train.runs import TOKENIZER
from train_jax import checkpoint as ckpt
from train_jax.config.run_config import CheckpointConfig, MeshConfig, MethodConfig
from train_jax.model.config import LoraSpec
from train_jax.train.checkpointing import TrainCheckpointer
from train_jax.train.partition import ModelParts

SHAPE = (1, 4, 16)


def _flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _changed(before, after) -> set[str]:
    a, b = _flat(before), _flat(after)
    return {k for k in a if not np.array_equal(a[k], b[k])}


def _train(method: MethodConfig, steps: int = 3):
    _, fns, state = setup(MeshConfig(1, 2, 2), jax.devices()[:4], method=method,
                             batch_shape=SHAPE)
    before = host({"trainable": state["trainable"], "frozen": state["frozen"]})
    rng = np.random.default_rng(0)
    for _ in range(steps):
        state, _ = run_step(fns, state, random_batch(rng, *SHAPE), SHAPE)
    return before, state


def test_lora_trains_only_the_adapters():
    lora = LoraSpec(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"))
    before, state = _train(MethodConfig(name="lora", lora=lora))
    trainable = _flat(state["trainable"])
    assert trainable and all(k.endswith(("['lora_a']", "['lora_b']")) for k in trainable)
    assert len(trainable) == 2 * 3 * 2  # 2 layers x 3 targets x (A, B)
    assert _changed(before["frozen"], host(state["frozen"])) == set()
    changed = _changed(before["trainable"], host(state["trainable"]))
    assert {k for k in trainable if k.endswith("['lora_b']")} <= changed


def test_freeze_trains_only_the_top_blocks_and_head():
    before, state = _train(MethodConfig(name="freeze", unfrozen_blocks=1))
    trainable = _flat(state["trainable"])
    assert {k.split("]")[0] + "]" for k in trainable} == {"['layers']", "['norm']", "['lm_head']"}
    assert all(k.startswith("['layers'][1]") for k in trainable if k.startswith("['layers']"))
    assert _changed(before["frozen"], host(state["frozen"])) == set()
    assert _changed(before["trainable"], host(state["trainable"])) == set(trainable)


def test_exported_merged_lora_model_matches_the_flax_lora_model(tmp_path):
    import torch
    from transformers import LlamaForCausalLM as TorchLlama

    from train_jax.convert.flax_model import model_from_params
    from train_jax.convert.hf_export import export_checkpoint
    from train_jax.convert.hf_import import from_hf

    lora = LoraSpec(rank=4, alpha=16.0, targets=("q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"))
    method = MethodConfig(name="lora", lora=lora)
    _, state = _train(method, steps=4)
    cfg = tiny_config(lora=lora)
    ckpt_dir = tmp_path / "ckpt"
    ckpt.write_checkpoint_info(ckpt_dir, cfg, assets_from=TOKENIZER)
    saver = TrainCheckpointer(ckpt_dir, CheckpointConfig(keep_best=0))
    saver.save(state, {"kind": "test"}, {})
    saver.close()

    # The Flax LoRA model as trained.
    from train_jax.model.llama import init_model
    parts, _, _ = ModelParts.split(init_model(cfg, 0), method)
    lora_model = parts.merge(host(state["trainable"]), host(state["frozen"]), train=False)
    ids = np.random.default_rng(1).integers(0, 256, size=(2, 12), dtype=np.int32)
    expected = np.asarray(lora_model(ids))

    out = tmp_path / "hf"
    export_checkpoint(ckpt_dir, out)
    merged_cfg, merged_params = from_hf(out)
    merged = np.asarray(model_from_params(merged_cfg, merged_params)(ids))
    np.testing.assert_allclose(merged, expected, rtol=0, atol=1e-5)
    assert "lora_a" not in str(jax.tree.structure(merged_params))

    torch_model = TorchLlama.from_pretrained(out, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        torch_logits = torch_model(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(torch_logits, expected, rtol=0, atol=1e-4)
    # The adapters really changed the model (so the merge had something to merge).
    no_adapters = jax.tree.map(np.zeros_like, host(state["trainable"]))
    base = np.asarray(parts.merge(no_adapters, host(state["frozen"]), train=False)(ids))
    assert np.max(np.abs(base - expected)) > 1e-3
