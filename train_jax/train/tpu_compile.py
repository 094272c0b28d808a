"""Compile a run's train step for a TPU slice on any host: libtpu makes the slice's devices.

`compile_for_slice(cfg, tpu)` makes the compile-only devices of the slice's topology
(`jax.experimental.topologies`; only the libtpu package is needed, no TPU), the run's mesh over
them, the model as abstract weights (`nnx.eval_shape`: its `config.json` is all it reads), and
lowers and compiles the very step `jaxtune train` jits (`step.build_train_steps`: same mesh,
shardings, optimizer, remat, kernels and batch) with `jax.ShapeDtypeStruct` arguments carrying
the shardings, inside `compiling_for("tpu")` so the kernels trace as they will on the slice.

A step that needs more HBM than a chip has does not compile (XLA: "Ran out of memory on HBM");
then the result carries the bytes XLA said it needs instead of the compiled executable.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from train_jax.config.run_config import RunConfig
from train_jax.model.config import ModelConfig
from train_jax.model.llama import init_model
from train_jax.model.loops import unrolled_loops
from train_jax.sharding.mesh import build_mesh
from train_jax.sharding.tpu_slices import TpuSlice
from train_jax.train.partition import ModelParts, PureTree
from train_jax.train.plan import model_config_for_plan
from train_jax.train.step import abstract_batch, abstract_state, build_train_steps

# XLA's refusal of a step too big for HBM, e.g. "... the total memory required for HLO
# temporaries (21.23G) exceeds available HBM (15.75G)." (G = GiB).
_OOM_RE = re.compile(r"Ran out of memory on HBM.*?\(([\d.]+)([KMGT])\).*?available HBM "
                     r"\(([\d.]+)([KMGT])\)")
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_ACCUMULATION_LOOP = 'op_name="jit(train_step)/while"'  # the micro-batch lax.scan, compiled
_LOOP = "stablehlo.while"  # a lax.scan / while_loop in the lowered step
_MOSAIC_CALL = "tpu_custom_call"  # a Pallas TPU kernel (splash attention) in the lowered step


class PlanError(ValueError):
    """The run cannot be planned for the target; the message says what to change."""


class LibtpuMissingError(PlanError):
    """libtpu, which compiles for TPU on any host, is not installed."""


# Where `make setup` puts libtpu: beside the environment's packages, not among them. vLLM takes
# an importable `libtpu` as proof that the host has TPUs and then refuses to start on a CPU or
# GPU host, so the compile-only libtpu is found by path (jax reads TPU_LIBRARY_PATH).
SIDE_LIBTPU_DIR = Path(sys.prefix) / "tpu-plan"


def libtpu_library_path() -> str | None:
    """The libtpu shared library to compile with: $TPU_LIBRARY_PATH, an importable libtpu (a TPU
    VM's), or the side install of `make setup` (`<venv>/tpu-plan`); None when there is none."""
    from_env = os.environ.get("TPU_LIBRARY_PATH")
    if from_env and Path(from_env).is_file():
        return from_env
    try:
        return importlib.import_module("libtpu").get_library_path()
    except ImportError:
        pass
    side = SIDE_LIBTPU_DIR / "libtpu" / "libtpu.so"
    return str(side) if side.is_file() else None


def require_libtpu() -> str:
    """The libtpu library path, or `LibtpuMissingError` (one line saying how to install it)."""
    path = libtpu_library_path()
    if path is None:
        raise LibtpuMissingError(
            "compiling for a TPU target needs libtpu on this host: `make setup` installs it, or "
            f"pip install --no-deps --target {SIDE_LIBTPU_DIR} 'libtpu=={_libtpu_version()}'")
    return path


def _libtpu_version() -> str:
    # The libtpu release jax's own `tpu` extra pins for the installed jax.
    from importlib.metadata import requires

    pins = [r.split(";")[0].split("==")[-1].strip() for r in requires("jax") or []
            if r.startswith("libtpu")]
    return pins[0] if pins else "<the release jax[tpu] pins>"


def use_host_cpu() -> None:
    """Make the CPU this process's JAX backend, unless JAX_PLATFORMS or an initialised backend
    already decided. For commands that only compile for a slice (`jaxtune plan --target`, the
    launchers' fit check): they need no local accelerator, libtpu's start-up on a host without
    TPU chips only logs errors, and on a TPU VM it would take chips a training may be using."""
    if os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms:
        return
    try:
        jax.config.update("jax_platforms", "cpu")
    except RuntimeError:  # a backend is already up: it stays
        pass


def _host_has_tpu() -> bool:
    try:
        from jax._src import hardware_utils  # the check jax itself makes at start-up
    except ImportError:
        return False
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0


@contextmanager
def _libtpu_start_env(tpu: TpuSlice) -> Iterator[None]:
    # Started on a host without TPU chips, libtpu looks for the slice it runs on and logs
    # errors when it finds none: naming the target for the duration of its start-up keeps it
    # quiet. It also takes /tmp/libtpu_lockfile, which guards chips this host does not have
    # and would stop a second plan running at the same time. Nothing is set on a TPU host or
    # where the variables are already set.
    added = {} if _host_has_tpu() else {
        "TPU_ACCELERATOR_TYPE": tpu.accelerator_type, "TPU_WORKER_HOSTNAMES": "localhost",
        "TPU_SKIP_MDS_QUERY": "1", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
    added["TPU_LIBRARY_PATH"] = require_libtpu()
    added = {k: v for k, v in added.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@functools.cache
def _topology_devices(tpu: TpuSlice) -> tuple[jax.Device, ...]:
    from jax.experimental import topologies

    with _libtpu_start_env(tpu):
        try:
            desc = topologies.get_topology_desc(topology_name=tpu.topology_name,
                                                platform="tpu", **tpu.topology_options())
        except Exception as exc:  # noqa: BLE001 - libtpu's JaxRuntimeError and friends
            raise PlanError(f"libtpu cannot make the {tpu.topology_name} topology of "
                            f"{tpu.accelerator_type}: {str(exc).splitlines()[0]}") from None
    return tuple(desc.devices)


def topology_devices(tpu: TpuSlice) -> list[jax.Device]:
    """The compile-only devices of `tpu` (one per chip), made by libtpu on this host."""
    require_libtpu()
    devices = list(_topology_devices(tpu))
    if len(devices) != tpu.chips:
        raise PlanError(f"libtpu made {len(devices)} devices for {tpu.topology_name}, but "
                        f"{tpu.accelerator_type} has {tpu.chips} chips")
    return devices


def model_config_for_target(cfg: RunConfig) -> ModelConfig:
    """The run's model configuration with its kernel setting resolved for TPU."""
    from train_jax.model.kernels.backend import resolve_backend

    model_cfg = model_config_for_plan(cfg)
    return dataclasses.replace(model_cfg, kernels=resolve_backend(cfg.model.kernels, "tpu"))


def abstract_parts(cfg: RunConfig, model_cfg: ModelConfig
                   ) -> tuple[ModelParts, PureTree, PureTree]:
    """Model parts and trainable / frozen parameters as ShapeDtypeStructs (no memory)."""
    abstract = nnx.eval_shape(lambda: init_model(model_cfg, cfg.train.seed))
    parts, trainable, frozen = ModelParts.split(abstract, cfg.method)
    # The rest (dropout RNG keys and counts) is closed over by the step: it must be concrete.
    rest = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype)
                        if isinstance(x, jax.ShapeDtypeStruct) else x, parts.rest)
    return dataclasses.replace(parts, rest=rest), trainable, frozen


@dataclass(frozen=True)
class CompiledStep:
    """What compiling the step for the slice gave: the executable, or XLA's memory refusal."""

    mesh: Mesh
    model_cfg: ModelConfig
    trainable: PureTree  # ShapeDtypeStructs
    frozen: PureTree
    compile_s: float
    state_bytes: int  # per chip: the train state (donated, so also the new state's bytes)
    batch_bytes: int  # per chip: this chip's rows of the batch
    program_flops: float | None  # XLA's cost analysis of the whole (unpartitioned) program
    mosaic_kernels: bool  # the step calls Pallas TPU kernels (splash attention)
    compiled: Any = None  # jax.stages.Compiled, or None when XLA ran out of HBM
    accumulation_loop: bool = False  # the compiled step kept the micro-batch loop
    needed_bytes: int = 0  # with compiled None: what XLA said the step needs per chip
    usable_bytes: int = 0  # with compiled None: the HBM XLA said it may use


def _shard_bytes(tree: Any) -> int:
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(tree))


def _program_flops(lowered: Any) -> float | None:
    """FLOPs of the lowered step before partitioning, by XLA's cost analysis on this host.

    The compiled per-chip program is no good for counting: XLA's TPU passes turn the fsdp
    all-gather + matmul pairs into loops over the shards (windowed einsums), and the cost
    analysis counts a loop body once. Before partitioning there are no such loops (only the
    accumulation scan, which the caller scales), and the count matches the compiled one where
    both are right (tested on the tiny model to 2%). None if this jax cannot tell.
    """
    try:
        from jax._src.lib import _jax  # no public API analyses an uncompiled module

        module = lowered.compiler_ir("hlo").as_hlo_module()
        cost = _jax.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
    except Exception:  # noqa: BLE001 - a private API: fall back to the compiled count
        return None
    return float(cost.get("flops", 0.0)) or None


def compile_for_slice(cfg: RunConfig, tpu: TpuSlice) -> CompiledStep:
    """Compile the train step of `cfg` for `tpu` (see the module docstring)."""
    from train_jax.model.kernels.platform import compiling_for

    devices = topology_devices(tpu)
    mesh = build_mesh(cfg.mesh, devices, f"chips of {tpu.accelerator_type} (topology "
                                         f"{tpu.topology})")
    model_cfg = model_config_for_target(cfg)
    parts, trainable, frozen = abstract_parts(cfg, model_cfg)
    started = time.perf_counter()
    with compiling_for("tpu"):
        steps = build_train_steps(cfg, parts, mesh, trainable, cfg.train.steps)
        state = abstract_state(steps.tx, trainable, frozen, steps.state_shardings)
        batch = abstract_batch(steps.batch_shardings(steps.batch_shape), steps.batch_shape)
        lowered = steps.train_step.lower(state, batch)
        text = lowered.as_text()
        accumulation_loops = 1 if cfg.train.micro_batches > 1 else 0  # scaled by the caller
        if text.count(_LOOP) > accumulation_loops:
            # The model's own loops (the layer scan, the chunked head loss), which XLA counts
            # once: count a second lowering of a fresh step (no cached trace) with them unrolled.
            with unrolled_loops():
                unrolled = build_train_steps(cfg, parts, mesh, trainable, cfg.train.steps)
                program_flops = _program_flops(unrolled.train_step.lower(state, batch))
        else:
            program_flops = _program_flops(lowered)
        common = {"mesh": mesh, "model_cfg": model_cfg, "trainable": trainable,
                  "frozen": frozen, "state_bytes": _shard_bytes(state),
                  "batch_bytes": _shard_bytes(batch), "program_flops": program_flops,
                  "mosaic_kernels": _MOSAIC_CALL in text}
        try:
            compiled = lowered.compile()
        except Exception as exc:  # noqa: BLE001 - XLA's errors are the message
            refusal = _OOM_RE.search(str(exc))
            if refusal is None:
                raise PlanError(f"the train step does not compile for {tpu.accelerator_type}: "
                                f"{str(exc).splitlines()[0]}") from None
            return CompiledStep(
                compile_s=round(time.perf_counter() - started, 2),
                needed_bytes=int(float(refusal[1]) * _UNITS[refusal[2]]),
                usable_bytes=int(float(refusal[3]) * _UNITS[refusal[4]]), **common)
    loop = cfg.train.micro_batches > 1 and _ACCUMULATION_LOOP in compiled.as_text()
    return CompiledStep(compile_s=round(time.perf_counter() - started, 2), compiled=compiled,
                        accumulation_loop=loop, **common)
