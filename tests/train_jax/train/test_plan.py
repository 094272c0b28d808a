"""`jaxtune plan`: partition specs and per-device bytes from shapes alone."""

from __future__ import annotations

import argparse

import yaml

from tests.train_jax.train.runs import TINY_ARCH, TOKENIZER
from train_jax.config.run_config import run_config_from_dict
from train_jax.train import plan_cli
from train_jax.train.plan import build_plan


def _cfg(**sections):
    raw = {"model": {"architecture": TINY_ARCH, "tokenizer": str(TOKENIZER)},
           "data": {"sources": [{"dataset": {"task": "viggo", "train_file": "x.csv",
                                             "max_length": 128}}]},
           "mesh": {"data": 2, "fsdp": 2, "tensor": 2}, **sections}
    return run_config_from_dict(raw)


def test_full_fine_tuning_plan_on_a_2x2x2_mesh():
    plan = build_plan(_cfg(), 8)
    by_path = {p.path: p for p in plan.params}
    q = by_path["layers.0.self_attn.q_proj.kernel"]  # 64 x 64 fp32, split 2 x 2
    assert q.spec == "('fsdp', 'tensor')" and q.bytes_per_device == 64 * 64 * 4 // 4
    norm = by_path["norm.scale"]
    assert norm.spec == "(None,)" and norm.bytes_per_device == 64 * 4
    assert all(p.trainable for p in plan.params)
    assert plan.optimizer_bytes == 2 * plan.param_bytes
    total_params = sum(p.bytes_per_device for p in plan.params)
    assert plan.param_bytes == total_params and plan.activation_bytes > 0


def test_lora_plan_has_small_optimizer_state_and_remat_saves_activations():
    lora = _cfg(method={"name": "lora", "lora": {"rank": 4, "targets": ["q_proj", "v_proj"]}})
    plan = build_plan(lora, 8)
    trainable = [p.path for p in plan.params if p.trainable]
    assert trainable and all(p.endswith(("lora_a", "lora_b")) for p in trainable)
    assert plan.optimizer_bytes < plan.param_bytes / 10
    no_remat = build_plan(_cfg(), 8).activation_bytes
    remat = build_plan(_cfg(model={"architecture": TINY_ARCH, "tokenizer": str(TOKENIZER),
                                   "remat": "full"}), 8).activation_bytes
    assert remat < no_remat


def test_plan_cli_prints_the_table(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_cfg().to_dict()))
    args = argparse.Namespace(config=str(config), devices=16,
                              overrides=["mesh.data=1", "mesh.fsdp=-1", "mesh.tensor=4"])
    assert plan_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 4} (16 devices)" in out
    assert "lm_head.kernel" in out and "optimizer (AdamW)" in out
