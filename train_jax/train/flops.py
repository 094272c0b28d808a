"""Model FLOPs per token and a measured matmul peak, for MFU (model FLOPs utilisation).

Counts follow the usual convention (PaLM appendix B): a matmul with N weights costs 2N FLOPs
per token forward; backward costs 2N for input gradients plus 2N for weight gradients, the
latter only for trained weights. Attention scores and values add 4 * layers * T * (N heads *
head_dim) forward per token (full T x T, as the dense kernel computes it).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from train_jax.model.config import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that take part in matmuls per token (embedding lookup excluded, head included)."""
    d, f, h = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    attn = d * cfg.num_attention_heads * h * 2 + d * cfg.num_key_value_heads * h * 2
    per_layer = attn + 3 * d * f
    return cfg.num_hidden_layers * per_layer + d * cfg.vocab_size


def attention_forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs per token of the dense (T x T) attention products (scores and values)."""
    return 4 * cfg.num_hidden_layers * seq_len * cfg.num_attention_heads * cfg.head_dim


def train_flops_per_token(cfg: ModelConfig, seq_len: int, trainable_fraction: float = 1.0) -> float:
    """FLOPs of one training step per token position (forward + backward)."""
    n = matmul_params(cfg)
    attention = attention_forward_flops_per_token(cfg, seq_len)
    forward = 2 * n + attention
    backward = 2 * n + 2 * attention + 2 * n * trainable_fraction
    return forward + backward


def measure_matmul_peak(dtype: str = "float32", size: int = 2048, repeats: int = 5,
                        device: jax.Device | None = None) -> float:
    """Best-of-`repeats` FLOP/s of a jitted square matmul of `dtype` inputs on one device.

    Products accumulate in float32, as the model's do (`train_jax.model.kernels`): for bf16 this
    is the fast kernel (docs/BENCHMARKS.md#training, "The first hand-written ops").
    """
    device = device or jax.local_devices()[0]
    key = jax.random.key(0)
    a = jax.device_put(jax.random.normal(key, (size, size), jnp.float32).astype(dtype), device)
    b = jax.device_put(jax.random.normal(key, (size, size), jnp.float32).astype(dtype), device)
    mm = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    mm(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops(dtype: str, configured_tflops_per_device: float | None) -> float:
    """Total peak FLOP/s of the run's devices.

    Configured: that figure times the device count. Measured: on CPU all (fake) devices of a
    process share its cores, so one matmul measures the whole host, times the process count;
    on accelerators one device's matmul times the device count.
    """
    if configured_tflops_per_device is not None:
        return configured_tflops_per_device * 1e12 * jax.device_count()
    measured = measure_matmul_peak(dtype, size=1024)
    if jax.default_backend() == "cpu":
        return measured * jax.process_count()
    return measured * jax.device_count()
