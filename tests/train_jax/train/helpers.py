"""Small builders shared by the training tests: a tiny model, method and random batches."""

from __future__ import annotations

import jax
import numpy as np

from train_jax.config.run_config import MeshConfig, MethodConfig, OptimizerConfig
from train_jax.model.config import ModelConfig
from train_jax.model.llama import init_model
from train_jax.sharding.mesh import build_mesh
from train_jax.train.optimizer import build_optimizer, learning_rate_schedule
from train_jax.train.partition import ModelParts
from train_jax.train.step import build_steps, init_state, put_batch

TINY_HF = {
    "model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}


def tiny_config(**options) -> ModelConfig:
    return ModelConfig.from_hf_config(TINY_HF, **options)


def random_batch(rng: np.random.Generator, micro: int, rows: int, length: int,
                 vocab: int = 256) -> dict[str, np.ndarray]:
    """Two packed segments per row, the second half of each trained."""
    ids = rng.integers(3, vocab, size=(micro, rows, length + 1), dtype=np.int32)
    half = length // 2
    segments = np.concatenate([np.ones((micro, rows, half), np.int32),
                               np.full((micro, rows, length - half), 2, np.int32)], axis=-1)
    positions = np.concatenate([np.arange(half), np.arange(length - half)]).astype(np.int32)
    mask = np.zeros((micro, rows, length), np.uint8)
    mask[..., half // 2:half] = 1
    mask[..., half + 2:] = 1
    return {"input_ids": ids[..., :-1], "targets": ids[..., 1:], "loss_mask": mask,
            "segment_ids": segments, "positions": np.broadcast_to(positions, mask.shape).copy()}


def setup(mesh_cfg: MeshConfig, devices, method: MethodConfig | None = None,
          model_cfg: ModelConfig | None = None, opt: OptimizerConfig | None = None,
          batch_shape=(1, 8, 16), seed: int = 0):
    """Mesh, jitted steps and an initial state for the tiny model."""
    cfg = model_cfg or tiny_config()
    method = method or MethodConfig()
    if method.name == "lora":
        cfg = cfg.replace(lora=method.lora)
    model = init_model(cfg, seed)
    parts, trainable, frozen = ModelParts.split(model, method)
    opt = opt or OptimizerConfig(learning_rate=1e-2, schedule="constant", weight_decay=0.1)
    schedule = learning_rate_schedule(opt, 10)
    tx = build_optimizer(opt, schedule)
    mesh = build_mesh(mesh_cfg, devices)
    steps = build_steps(parts, tx, schedule, mesh, trainable, batch_shape)
    state = init_state(parts, tx, trainable, frozen, steps.state_shardings)
    return mesh, steps, state


def run_step(steps, state, batch, batch_shape):
    placed = put_batch(batch, steps.batch_shardings(batch_shape), batch_shape)
    return steps.train_step(state, placed)


def host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))
