"""Model FLOPs per token and the devices' peak, for MFU (model FLOPs utilisation).

Counts follow the usual convention (PaLM appendix B): a matmul with N weights costs 2N FLOPs
per token forward; backward costs 2N for input gradients plus 2N for weight gradients, the
latter only for trained weights. Attention scores and values add 4 * layers * T * (N heads *
head_dim) forward per token (full T x T, as the dense kernel computes it).
"""

from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp

from train_jax.model.config import ModelConfig
from train_jax.sharding.tpu_slices import GENERATIONS

logger = logging.getLogger(__name__)

# JAX's device_kind of each TPU generation (as libtpu names them) -> `GENERATIONS` key.
TPU_DEVICE_KINDS: dict[str, str] = {
    "TPU v4": "v4", "TPU v5": "v5p", "TPU v5p": "v5p", "TPU v5 lite": "v5litepod",
    "TPU v5e": "v5litepod", "TPU v6 lite": "v6e", "TPU v6e": "v6e",
}
# Dense (no sparsity) bf16 tensor-core peaks per GPU from NVIDIA's datasheets, matched as
# substrings of device_kind in this order (the PCIe H100 before the SXM default; L40S before L4).
GPU_BF16_PEAKS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
    ("L40S", 362e12), ("L4", 121e12),
)


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


def published_peak_flops(device_kind: str) -> float | None:
    """The vendor's dense bf16 peak FLOP/s of one device of `device_kind` (JAX's name for it),
    or None for a device this table does not know (CPUs among them)."""
    generation = TPU_DEVICE_KINDS.get(device_kind)
    if generation is not None:
        return GENERATIONS[generation].peak_bf16_flops
    for name, flops in GPU_BF16_PEAKS:
        if name in device_kind:
            return flops
    return None


def peak_flops(dtype: str, configured_tflops_per_device: float | None) -> float:
    """Total peak FLOP/s of the run's devices.

    Configured: that figure times the device count. On a TPU or GPU this table knows: the
    vendor's dense bf16 peak per device times the device count, as MFU is conventionally
    reported (a float32 run is measured against it too: its matmuls run on the same units), so
    figures compare with other tools'. Otherwise measured: on CPU all (fake) devices of a
    process share its cores, so one matmul measures the whole host, times the process count;
    on another accelerator one device's matmul times the device count. The source is logged.
    """
    if configured_tflops_per_device is not None:
        logger.info("mfu peak: train.peak_tflops_per_device = %g", configured_tflops_per_device)
        return configured_tflops_per_device * 1e12 * jax.device_count()
    kind = jax.devices()[0].device_kind
    published = published_peak_flops(kind)
    if published is not None:
        logger.info("mfu peak: %s, published dense bf16 peak %.0f TFLOP/s per device", kind,
                    published / 1e12)
        return published * jax.device_count()
    measured = measure_matmul_peak(dtype, size=1024)
    logger.info("mfu peak: %s, measured %s matmul %.2f TFLOP/s (set train.peak_tflops_per_device "
                "to use a published figure)", kind, dtype, measured / 1e12)
    if jax.default_backend() == "cpu":
        return measured * jax.process_count()
    return measured * jax.device_count()
