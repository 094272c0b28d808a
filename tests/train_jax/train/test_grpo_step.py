"""The jitted GRPO update: skipping the separate old-log-prob pass (one update per rollout, no
dropout) gives the same update as computing it, and is refused where it would not."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.train_jax.train.dpo_helpers import LORA
from tests.train_jax.train.helpers import TINY_HF, host
from train_jax.config.run_config import run_config_from_dict
from train_jax.model.config import ModelConfig
from train_jax.model.llama import init_model
from train_jax.sharding.mesh import build_mesh
from train_jax.train.grpo.rollout import update_rows
from train_jax.train.grpo.step import build_grpo_steps
from train_jax.train.partition import ModelParts
from train_jax.train.step import init_state, place

ROWS, WIDTH, NEW = 8, 6, 5


def _config(method: str, updates: int = 1):
    return run_config_from_dict({
        "model": {"architecture": TINY_HF, "tokenizer": "unused"},
        "data": {"sources": [{"dataset": {"task": "jsonl", "train_file": "unused.jsonl",
                                          "max_length": WIDTH + NEW}}]},
        "mesh": {"data": 1, "fsdp": 2, "tensor": 1},
        "optimizer": {"learning_rate": 1e-2, "schedule": "constant", "warmup_steps": 0,
                      "clip_norm": None, "eps": 1e-3},
        "method": {"name": method, "lora": LORA},
        "objective": {"name": "grpo", "grpo": {"group_size": 4, "prompts_per_step": 2,
                                               "max_new_tokens": NEW, "kl_coef": 0.05,
                                               "temperature": 0.7,
                                               "updates_per_rollout": updates}},
        "train": {"steps": 4, "micro_batches": 2},
    })


def _rollout_batch(seed: int) -> dict[str, np.ndarray]:
    """Left-padded prompts and sampled completions of varying length, as the loop builds them."""
    rng = np.random.default_rng(seed)
    pad = rng.integers(0, 3, ROWS)
    prompts = rng.integers(3, 256, (ROWS, WIDTH)).astype(np.int32)
    prompts[np.arange(WIDTH)[None, :] < pad[:, None]] = 0
    tokens = rng.integers(3, 256, (ROWS, NEW)).astype(np.int32)
    counts = rng.integers(1, NEW + 1, ROWS)
    return update_rows(prompts, pad, tokens, counts, micro_batches=2)


def _one_update(method: str, separate: bool, updates: int = 1):
    cfg = _config(method, updates)
    model_cfg = ModelConfig.from_hf_config(TINY_HF,
                                           lora=cfg.method.lora if method == "lora" else None)
    parts, trainable, frozen = ModelParts.split(init_model(model_cfg, 3), cfg.method)
    if method == "lora":  # adapters that do something, so the reference differs from the policy
        rng = np.random.default_rng(4)
        trainable = jax.tree.map(lambda x: (rng.normal(0, 0.3, x.shape)).astype(x.dtype),
                                 trainable)
    mesh = build_mesh(cfg.mesh, jax.devices()[:2])
    steps = build_grpo_steps(cfg.objective.grpo, cfg.optimizer, parts, mesh, trainable, 4,
                             (2, ROWS // 2, WIDTH + NEW), lora_reference=method == "lora",
                             separate_old_logp=separate)
    reference = {} if method == "lora" else place(trainable, steps.reference_shardings)
    state = init_state(parts, steps.tx, trainable, frozen, steps.state_shardings)
    if method != "lora":  # a policy that has moved away from its reference
        state["trainable"] = jax.tree.map(lambda x: x * 1.05, state["trainable"])
    placed = {k: place(v, steps.batch_shardings[k]) for k, v in _rollout_batch(0).items()}
    logps = steps.logprob_step(state, reference, placed)
    advantages = np.linspace(-1.5, 1.5, ROWS, dtype=np.float32).reshape(2, -1)
    batch = {**placed, **logps,
             "advantages": place(advantages, steps.batch_shardings["advantages"])}
    state, metrics = steps.update_step(state, batch)
    return steps.logp_keys, host(metrics), host(state["trainable"])


@pytest.mark.parametrize("method", ["full", "lora"])
def test_skipping_the_old_logp_pass_gives_the_same_update(method):
    keys_two, metrics_two, params_two = _one_update(method, separate=True)
    keys_one, metrics_one, params_one = _one_update(method, separate=False)
    assert keys_two == ("old_logp", "ref_logp") and keys_one == ("ref_logp",)
    for name in ("loss", "kl", "grad_norm"):
        assert metrics_one[name] == pytest.approx(metrics_two[name], rel=1e-4, abs=1e-6), name
    assert metrics_one["kl"] > 1e-4  # the KL term is live, so ref_logp really entered the loss
    assert metrics_one["clip_fraction"] == metrics_two["clip_fraction"] == 0.0
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), params_one,
                                         params_two))
    assert max(moved) < 1e-5
    assert metrics_one["grad_norm"] > 1e-3  # and the update did something


def test_the_pass_is_kept_by_default_with_several_updates_and_cannot_be_skipped_there():
    cfg = _config("full", updates=2)
    parts, trainable, _ = ModelParts.split(init_model(ModelConfig.from_hf_config(TINY_HF), 0),
                                           cfg.method)
    mesh = build_mesh(cfg.mesh, jax.devices()[:2])
    args = (cfg.objective.grpo, cfg.optimizer, parts, mesh, trainable, 4, (2, 4, WIDTH + NEW))
    assert build_grpo_steps(*args, lora_reference=False).logp_keys == ("old_logp", "ref_logp")
    assert build_grpo_steps(*_replace_updates(args, 1), lora_reference=False,
                            dropout=True).logp_keys == ("old_logp", "ref_logp")
    assert build_grpo_steps(*_replace_updates(args, 1),
                            lora_reference=False).logp_keys == ("ref_logp",)
    with pytest.raises(ValueError, match="several updates per rollout or with dropout"):
        build_grpo_steps(*args, lora_reference=False, separate_old_logp=False)


def _replace_updates(args: tuple, updates: int) -> tuple:
    from dataclasses import replace

    return (replace(args[0], updates_per_rollout=updates), *args[1:])
