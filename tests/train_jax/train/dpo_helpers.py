"""Builders for the DPO step tests: a tiny run config, its jitted steps and synthetic pairs."""

from __future__ import annotations

import jax
import numpy as np

from tests.train_jax.train.helpers import TINY_HF, host
from train_jax.config.run_config import RunConfig, run_config_from_dict
from train_jax.model.config import ModelConfig
from train_jax.model.llama import init_model
from train_jax.sharding.mesh import build_mesh
from train_jax.train.dpo.step import build_dpo_steps
from train_jax.train.partition import ModelParts
from train_jax.train.step import init_state, place, put_batch

LORA = {"rank": 4, "alpha": 8.0, "targets": ["q_proj", "v_proj", "down_proj"]}


def dpo_config(method: str = "full", *, pairs: int = 8, micro: int = 1, length: int = 24,
               lr: float = 1e-2, beta: float = 0.1, mesh=(2, 2, 2), eps: float = 1e-8,
               **dpo) -> RunConfig:
    """A validated run config for the tiny model (the data file is never read by the step).

    A large AdamW `eps` makes updates linear in tiny gradients, so comparisons of updated
    weights are not dominated by Adam normalising a gradient of rounding-error size.
    """
    return run_config_from_dict({
        "model": {"architecture": TINY_HF, "tokenizer": "unused"},
        "data": {"sources": [{"dataset": {"task": "preference", "train_file": "unused.jsonl",
                                          "max_length": length}}]},
        "mesh": dict(zip(("data", "fsdp", "tensor"), mesh, strict=True)),
        "optimizer": {"learning_rate": lr, "schedule": "constant", "clip_norm": None, "eps": eps},
        "method": {"name": method, "lora": LORA, "unfrozen_blocks": 1},
        "objective": {"name": "dpo", "dpo": {"beta": beta, **dpo}},
        "train": {"steps": 10, "batch_size": pairs, "micro_batches": micro},
    })


def build(cfg: RunConfig, seed: int = 0, devices=None):
    """(steps, state, reference, parts) for `cfg`, laid out on its mesh."""
    model_cfg = ModelConfig.from_hf_config(
        TINY_HF, lora=cfg.method.lora if cfg.method.name == "lora" else None)
    model = init_model(model_cfg, seed)
    parts, trainable, frozen = ModelParts.split(model, cfg.method)
    mesh = build_mesh(cfg.mesh, devices if devices is not None else jax.devices())
    has_copy = cfg.method.name != "lora"
    steps = build_dpo_steps(cfg, parts, mesh, trainable, has_copy, cfg.train.steps)
    reference = place(trainable, steps.reference_shardings) if has_copy else {}
    state = init_state(parts, steps.tx, trainable, frozen, steps.state_shardings)
    return steps, state, reference, parts


def synthetic_pairs(rng: np.random.Generator, pairs: int, length: int, *, prompt: int = 6,
                    chosen: int = 4, rejected: int = 3, vocab: int = 256
                    ) -> dict[str, np.ndarray]:
    """(pairs, 2, length) rows: one shared random prompt per pair, a longer chosen and a
    shorter rejected completion (so a random model starts out preferring the rejected one)."""
    arrays = {k: np.zeros((pairs, 2, length), np.int32) for k in
              ("input_ids", "targets", "segment_ids", "positions")}
    arrays["loss_mask"] = np.zeros((pairs, 2, length), np.uint8)
    for i in range(pairs):
        head = rng.integers(3, vocab, prompt)
        for side, n in ((0, chosen), (1, rejected)):
            tokens = np.concatenate([head, rng.integers(3, vocab, n), [2]])
            span = len(tokens) - 1
            arrays["input_ids"][i, side, :span] = tokens[:-1]
            arrays["targets"][i, side, :span] = tokens[1:]
            arrays["loss_mask"][i, side, prompt - 1:span] = 1  # completion + EOS targets
            arrays["segment_ids"][i, side, :span] = 1
            arrays["positions"][i, side, :span] = np.arange(span)
    return arrays


def placed(steps, batch: dict[str, np.ndarray]):
    """A host batch of (pairs, 2, length) -> the step's (micro, pairs/micro, 2, length) input."""
    micro, rows = steps.batch_shape[:2]
    shaped = {k: v.reshape(micro, rows, *v.shape[1:]) for k, v in batch.items()}
    return put_batch(shaped, steps.batch_shardings(steps.batch_shape), steps.batch_shape)


__all__ = ["build", "dpo_config", "host", "placed", "synthetic_pairs"]
