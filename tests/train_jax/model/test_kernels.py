"""Every kernel backend equals `reference`, values and gradients; the choice and the fallback.

float32: within 1e-5 of `reference`. bfloat16: no further from the float64 result (`reference`
run in float64 on the same bf16 inputs) than `reference` itself is (relative RMS error; the
xla_cpu ops' deliberately rounded gradients within a stated bound, see below). Attention runs on packed
rows (several segments, then padding), grouped-query heads (4 query heads over 2 kv heads) and
head_dim 64 and 128; the TPU kernel runs in Pallas' interpret mode here, the GPU one as XLA's
attention (no GPU).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.train_jax.model.packed import packed_segments, segment_positions
from tests.train_jax.model.vjp_check import assert_same_vjp
from train_jax.model import axes
from train_jax.model.kernels import reference, tpu
from train_jax.model.kernels.backend import (
    UnknownKernelBackendError,
    kernel_ops,
    resolve_backend,
)
from train_jax.model.kernels.names import KERNEL_BACKENDS
from train_jax.model.kernels.platform import compiling_for, warn_fallback
from train_jax.model.rope import rope_cos_sin

BACKENDS = ["xla_cpu", "tpu", "gpu"]
LOGGER = "train_jax.model.kernels.platform"
# bf16: a backend's relative RMS error against float64, over `reference`'s, may be at most this
# (1 = no worse; the 0.1% covers the metric's own rounding when both compute the same thing).
NO_WORSE = 1.001
# The xla_cpu ops round some backward intermediates to the compute dtype on purpose (attention:
# dS before the dQ and dK products; the fused head loss: softmax - one_hot), which XLA:CPU's fast
# bf16 products need (docs/BENCHMARKS.md#training). Their dQ, dK and head gradients are then ~8%
# and ~15% (RMS) further from float64 than autodiff's; their values, and every other op, no worse.
XLA_CPU_ROUNDED_BACKWARD = 1.2


def _attention_case(dtype, head_dim: int, length: int = 128, seed: int = 0):
    """(q, k, v), segment ids, RoPE tables and an output cotangent."""
    keys = jax.random.split(jax.random.key(seed), 4)
    b, n, kv = 2, 4, 2
    q = jax.random.normal(keys[0], (b, length, n, head_dim), dtype)
    k = jax.random.normal(keys[1], (b, length, kv, head_dim), dtype)
    v = jax.random.normal(keys[2], (b, length, kv, head_dim), dtype)
    cotangent = jax.random.normal(keys[3], (b, length, n, head_dim), dtype)
    segments = packed_segments(length)
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    rope = rope_cos_sin(jnp.asarray(segment_positions(segments)), inv_freq)
    return (q, k, v), jnp.asarray(segments), rope, cotangent


def _attention(backend: str, segments, rope):
    attend = kernel_ops(backend).attention
    return jax.jit(lambda q, k, v: attend(q, k, v, segments, rope=rope))


@pytest.fixture
def fallback_log(caplog):
    """Fallback warnings of this test only (they are logged once per reason and process)."""
    warn_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        yield caplog


def _assert_splash_runs(q, k):
    assert tpu.unsupported(q, k, interpret=True) is None, "the TPU case would not run splash"


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_equals_reference_in_float32(backend, head_dim, fallback_log):
    args, segments, rope, cotangent = _attention_case(jnp.float32, head_dim)
    _assert_splash_runs(*args[:2])
    assert_same_vjp(_attention(backend, segments, rope), _attention("reference", segments, rope),
                    args, cotangent, value_tol=1e-5, grad_tol=1e-5)
    if backend == "tpu":
        assert "kernels tpu" not in fallback_log.text  # splash ran, not its fallback


def _float64_vjp(fn, args, cotangent) -> list[np.ndarray]:
    """Value and input gradients of `fn` evaluated in float64 on the (rounded) inputs."""
    with jax.enable_x64(True):
        wide = [jnp.asarray(np.asarray(a, np.float64)) for a in args]
        out, vjp = jax.vjp(fn, *wide)
        grads = vjp(jnp.asarray(np.asarray(cotangent, np.float64)))
        return [np.asarray(x, np.float64) for x in (out, *grads)]


def _relative_errors(fn, args, cotangent, exact: list[np.ndarray]) -> np.ndarray:
    """Relative RMS error, ||got - exact|| / ||exact||, of the value and each input gradient."""
    out, vjp = jax.vjp(fn, *args)
    got = (out, *vjp(cotangent))
    return np.array([np.sqrt(np.mean((np.asarray(g, np.float64) - e) ** 2) / np.mean(e ** 2))
                     for g, e in zip(got, exact, strict=True)])


def _assert_no_worse_than_reference(fn, reference_fn, args, cotangent, exact_fn=None,
                                    grad_bound: float = NO_WORSE):
    """`fn`'s value no further from float64 than `reference_fn`'s; its gradients within
    `grad_bound` times the reference's error."""
    exact = _float64_vjp(exact_fn or reference_fn, args, cotangent)
    got = _relative_errors(fn, args, cotangent, exact)
    ref = _relative_errors(reference_fn, args, cotangent, exact)
    assert got[0] <= NO_WORSE * ref[0], (got, ref)
    assert np.all(got[1:] <= grad_bound * ref[1:]), (got, ref)


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_in_bf16_is_no_further_from_float64_than_reference(backend, head_dim):
    args, segments, rope, cotangent = _attention_case(jnp.bfloat16, head_dim, seed=1)
    _assert_splash_runs(*args[:2])

    def exact(q, k, v):  # unjitted: evaluated in float64
        return reference.attention(q, k, v, segments, rope=rope)

    bound = XLA_CPU_ROUNDED_BACKWARD if backend == "xla_cpu" else NO_WORSE
    _assert_no_worse_than_reference(_attention(backend, segments, rope),
                                    _attention("reference", segments, rope), args, cotangent,
                                    exact, bound)


def _op_case(name: str, dtype):
    """(op of a KernelOps, differentiable args, cotangent) for the ops other than attention."""
    keys = jax.random.split(jax.random.key(2), 4)
    x = (3.0 * jax.random.normal(keys[0], (2, 8, 32))).astype(dtype)
    cotangent = jax.random.normal(keys[1], (2, 8, 32)).astype(dtype)
    if name == "rms_norm":
        scale = 1.0 + 0.1 * jax.random.normal(keys[2], (32,))
        return (lambda ops: lambda x, s: ops.rms_norm(x, s, 1e-5)), (x, scale), cotangent
    if name == "swiglu":
        up = (3.0 * jax.random.normal(keys[2], (2, 8, 32))).astype(dtype)
        return (lambda ops: ops.swiglu), (x, up), cotangent
    if name == "dense":
        kernel = jax.random.normal(keys[2], (32, 48))
        return (lambda ops: ops.dense), (x, kernel), jax.random.normal(keys[3], (2, 8, 48)).astype(dtype)
    if name == "dense_transposed":
        table = jax.random.normal(keys[2], (40, 32))
        return (lambda ops: ops.dense_transposed), (x, table), jax.random.normal(keys[3], (2, 8, 40)).astype(dtype)
    targets = jax.random.randint(keys[2], (2, 8), 0, 96)
    table = jax.random.normal(keys[3], (96, 32))
    loss_mask = jax.random.uniform(keys[1], (2, 8)) * (jnp.arange(8) % 3 != 0)  # zeros included
    return (lambda ops: lambda h, t: ops.head_cross_entropy(h, t, targets)), (x, table), loss_mask


OPS = ["rms_norm", "swiglu", "dense", "dense_transposed", "head_cross_entropy"]


@pytest.mark.parametrize("name", OPS)
def test_xla_cpu_ops_equal_reference_in_float32(name):
    op, args, cotangent = _op_case(name, jnp.float32)
    assert_same_vjp(jax.jit(op(kernel_ops("xla_cpu"))), jax.jit(op(kernel_ops("reference"))),
                    args, cotangent, value_tol=1e-5, grad_tol=1e-5)


@pytest.mark.parametrize("name", OPS)
def test_xla_cpu_ops_in_bf16_are_no_further_from_float64_than_reference(name):
    op, args, cotangent = _op_case(name, jnp.bfloat16)
    bound = XLA_CPU_ROUNDED_BACKWARD if name == "head_cross_entropy" else NO_WORSE
    _assert_no_worse_than_reference(jax.jit(op(kernel_ops("xla_cpu"))),
                                    jax.jit(op(kernel_ops("reference"))), args, cotangent,
                                    op(kernel_ops("reference")), bound)


@pytest.mark.parametrize("length, head_dim, reason", [
    (96, 64, "sequence length 96 is not a multiple of 128"),
    (128, 16, "head_dim 16 is not a multiple of 64"),
])
def test_a_shape_splash_cannot_take_runs_as_reference_with_a_warning(length, head_dim, reason,
                                                                     fallback_log):
    args, segments, rope, _ = _attention_case(jnp.float32, head_dim, length)
    got = _attention("tpu", segments, rope)(*args)
    assert f"kernels tpu: {reason}; this call runs the reference implementation" in fallback_log.text
    np.testing.assert_array_equal(got, _attention("reference", segments, rope)(*args))


def test_gpu_backend_off_a_gpu_says_it_runs_xla_attention(fallback_log):
    args, segments, rope, _ = _attention_case(jnp.float32, 64)
    got = _attention("gpu", segments, rope)(*args)
    assert "kernels gpu: not compiling for a CUDA GPU (cpu)" in fallback_log.text
    assert "runs the XLA attention implementation" in fallback_log.text
    np.testing.assert_allclose(got, _attention("reference", segments, rope)(*args), atol=1e-5)


def test_splash_for_several_tpu_devices_needs_a_per_shard_map(fallback_log):
    args, segments, rope, _ = _attention_case(jnp.float32, 64)
    attend = kernel_ops("tpu").attention
    with compiling_for("tpu"):  # the real kernel, not the interpreter: traced, never run here
        jax.eval_shape(lambda q, k, v: attend(q, k, v, segments, rope=rope), *args)
    assert "several TPU devices but no per-shard map" in fallback_log.text


def test_splash_runs_per_shard_inside_a_shard_map(fallback_log):
    # What train_jax.sharding provides on a TPU mesh: `per_shard` as a shard_map over the
    # batch. Interpret mode partitions without it; here the kernel really runs per shard.
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))

    def spec(logical: axes.LogicalAxes) -> PartitionSpec:
        return PartitionSpec(*("data" if name == axes.BATCH else None for name in logical))

    def shard_map(fn, args, in_axes, out_axes):
        mapped = jax.shard_map(fn, mesh=mesh, in_specs=tuple(spec(a) for a in in_axes),
                               out_specs=spec(out_axes), check_vma=False)
        return mapped(*args)

    args, segments, rope, _ = _attention_case(jnp.float32, 64)
    with axes.per_shard_map(shard_map):
        got = _attention("tpu", segments, rope)(*args)
    assert "kernels tpu" not in fallback_log.text
    np.testing.assert_allclose(got, _attention("reference", segments, rope)(*args), atol=1e-5)


def test_on_a_tensor_axis_splash_splits_kv_heads_with_their_query_heads(fallback_log,
                                                                          monkeypatch):
    # The sharding module's own per-shard map on a (data 2, tensor 2) mesh: each shard holds
    # one row and one of the two kv heads with its two query heads, and the result is still
    # the reference's (a wrong query-to-kv pairing would not be).
    from train_jax.config.run_config import MeshConfig
    from train_jax.sharding.mesh import build_mesh
    from train_jax.sharding.per_shard import per_shard_mapping

    heads_per_call = []
    kernel = tpu._kernel

    def spy(length, heads, causal, interpret):
        heads_per_call.append(heads)
        return kernel(length, heads, causal, interpret)

    monkeypatch.setattr(tpu, "_kernel", spy)
    mesh = build_mesh(MeshConfig(2, 1, 2), jax.devices()[:4], "test devices")
    args, segments, rope, _ = _attention_case(jnp.float32, 64)
    with per_shard_mapping(mesh):
        got = _attention("tpu", segments, rope)(*args)
    assert "kernels tpu" not in fallback_log.text
    assert heads_per_call == [2]  # of 4 query heads: the tensor axis split them in two
    np.testing.assert_allclose(got, _attention("reference", segments, rope)(*args), atol=1e-5)


@pytest.mark.parametrize("platform, backend", [
    ("tpu", "tpu"), ("gpu", "gpu"), ("cuda", "gpu"), ("cpu", "xla_cpu"), ("METAL", "xla_cpu"),
])
def test_auto_picks_the_backend_of_the_platform(platform, backend):
    assert resolve_backend("auto", platform) == backend


def test_a_backend_name_means_itself_and_auto_follows_the_platform_compiled_for():
    assert all(resolve_backend(name, "tpu") == name for name in KERNEL_BACKENDS)
    assert resolve_backend("auto") == "xla_cpu"  # the tests run on CPU
    with compiling_for("tpu"):
        assert resolve_backend("auto") == "tpu"


def test_unknown_backend_names_are_errors():
    with pytest.raises(UnknownKernelBackendError, match="choose from auto, reference, xla_cpu"):
        resolve_backend("cuda")
    with pytest.raises(UnknownKernelBackendError, match="unknown kernel backend 'auto'"):
        kernel_ops("auto")
