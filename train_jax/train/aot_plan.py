"""The AOT plan of a run on a Cloud TPU slice: bytes per chip, FLOPs, roofline, verdict.

`plan_for_target(cfg, parse_tpu_type("v5p-16"))` compiles the run's train step for the slice
on this host (`tpu_compile.compile_for_slice`, through libtpu). XLA's memory analysis of the
compiled step gives the bytes per chip; XLA's cost analysis of the step before partitioning
gives its FLOPs (`_step_flops`: the compiled per-chip program undercounts, see
`tpu_compile._program_flops`), and of the compiled step the bytes accessed per chip.

Roofline: step time >= max(FLOPs per chip / bf16 peak, bytes accessed per chip / HBM
bandwidth). It is a lower bound (no communication between chips, no stalls), so the MFU
derived from it, model FLOPs per step / (chips x peak x step time), is an upper bound.

A step that needs more HBM than a chip has does not compile; its plan carries the bytes XLA
said it needs, its FLOPs, and no bytes accessed or roofline (nothing compiled to measure).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from train_jax.config.loading import ConfigError
from train_jax.config.run_config import RunConfig, apply_overrides, run_config_from_dict
from train_jax.model.config import ModelConfig
from train_jax.sharding.tpu_slices import TpuSlice
from train_jax.train.flops import attention_forward_flops_per_token, train_flops_per_token
from train_jax.train.tpu_compile import CompiledStep, PlanError, compile_for_slice, require_libtpu

TIGHT_FRACTION = 0.95  # a peak above this share of HBM fits on paper but leaves no headroom


@dataclass(frozen=True)
class TargetPlan:
    """What compiling the run's train step for one TPU slice found, per chip unless named."""

    target: str
    topology: str
    chips: int
    hosts: int
    mesh: dict[str, int]
    compiled: bool  # False: XLA refused the step for lack of HBM
    hbm_bytes_per_chip: int
    argument_bytes: int  # parameters, optimizer state and the batch shard
    output_bytes: int
    alias_bytes: int  # outputs written into donated arguments
    temp_bytes: int  # activations and scratch
    generated_code_bytes: int
    peak_bytes_per_chip: int
    flops_per_chip: float | None  # FLOPs per step / chips (`_step_flops`)
    bytes_accessed_per_chip: float | None
    model_flops_per_step: float  # train_flops_per_token x tokens (the MFU numerator)
    tokens_per_step: int
    peak_flops_per_chip: float
    hbm_bandwidth_per_chip: float
    compile_s: float
    overrides: tuple[str, ...] = ()  # applied to the config for this plan (fit suggestions)
    notes: tuple[str, ...] = ()
    # XLA's cost analysis of the compiled per-chip program as it stands (loops XLA made count
    # once, see `_step_flops`): low, but counted as other tools that read it (MaxText's
    # train_compile) count, so comparable with them.
    compiled_flops_per_chip: float | None = None

    @property
    def total_bytes_per_chip(self) -> int:
        """Arguments + outputs not aliased onto them + temporaries + code."""
        return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
                + self.generated_code_bytes)

    @property
    def fits(self) -> bool:
        return self.compiled and self.peak_bytes_per_chip <= self.hbm_bytes_per_chip

    @property
    def flops_per_step(self) -> float | None:
        """FLOPs of one step, all chips together."""
        return None if self.flops_per_chip is None else self.flops_per_chip * self.chips

    @property
    def compute_time_s(self) -> float | None:
        return None if self.flops_per_chip is None else (
            self.flops_per_chip / self.peak_flops_per_chip)

    @property
    def memory_time_s(self) -> float | None:
        return None if self.bytes_accessed_per_chip is None else (
            self.bytes_accessed_per_chip / self.hbm_bandwidth_per_chip)

    @property
    def step_time_s(self) -> float | None:
        """Roofline lower bound of one step."""
        if self.compute_time_s is None or self.memory_time_s is None:
            return None
        return max(self.compute_time_s, self.memory_time_s)

    @property
    def mfu(self) -> float | None:
        """Model FLOPs utilisation at the roofline step time (an upper bound)."""
        if not self.step_time_s:
            return None
        return self.model_flops_per_step / (
            self.chips * self.peak_flops_per_chip * self.step_time_s)

    def to_json(self) -> dict[str, Any]:
        """Every field and derived figure as plain JSON values."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(overrides=list(self.overrides), notes=list(self.notes))
        for name in ("total_bytes_per_chip", "fits", "flops_per_step", "compute_time_s",
                     "memory_time_s", "step_time_s", "mfu"):
            out[name] = getattr(self, name)
        return out


def plan_for_target(cfg: RunConfig, tpu: TpuSlice, overrides: tuple[str, ...] = ()
                    ) -> TargetPlan:
    """Compile the train step of `cfg` for `tpu` and read its memory and cost analyses.

    Plans are kept per (config, slice) for the life of the process: a launcher, a fit search
    or a test asking again does not compile again.
    """
    require_libtpu()
    return _plan(json.dumps(cfg.to_dict(), sort_keys=True), tpu, overrides)


@functools.lru_cache(maxsize=32)
def _plan(cfg_json: str, tpu: TpuSlice, overrides: tuple[str, ...]) -> TargetPlan:
    cfg = run_config_from_dict(json.loads(cfg_json))
    step = compile_for_slice(cfg, tpu)
    gen = tpu.generation
    tokens = cfg.train.batch_size * cfg.data.max_length
    notes = list(_notes(cfg, step))
    flops, flop_notes = _step_flops(cfg, step)
    common = {"target": tpu.accelerator_type, "topology": tpu.topology, "chips": tpu.chips,
              "hosts": tpu.hosts, "mesh": {str(k): int(v) for k, v in step.mesh.shape.items()},
              "hbm_bytes_per_chip": gen.hbm_bytes, "model_flops_per_step": _model_flops(cfg, step),
              "tokens_per_step": tokens, "peak_flops_per_chip": gen.peak_bf16_flops,
              "hbm_bandwidth_per_chip": gen.hbm_bandwidth, "compile_s": step.compile_s,
              "overrides": overrides}
    if step.compiled is None:
        arguments = step.state_bytes + step.batch_bytes
        notes.insert(0, f"XLA refused to compile the step: it needs {_gib(step.needed_bytes)} "
                        f"per chip, libtpu lets it use {_gib(step.usable_bytes)}")
        return TargetPlan(
            compiled=False, argument_bytes=arguments, output_bytes=step.state_bytes,
            alias_bytes=step.state_bytes, temp_bytes=max(step.needed_bytes - arguments, 0),
            generated_code_bytes=0, peak_bytes_per_chip=step.needed_bytes,
            flops_per_chip=None if flops is None else flops / tpu.chips,
            bytes_accessed_per_chip=None, notes=tuple(notes + flop_notes), **common)
    memory = step.compiled.memory_analysis()
    cost = step.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    loop_runs = cfg.train.micro_batches if step.accumulation_loop else 1
    if flops is None:
        flops = float(cost.get("flops", 0.0)) * tpu.chips * loop_runs
        flop_notes.append("FLOPs from the compiled per-chip program, where loops XLA made "
                          "(windowed einsums) count once: low")
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + memory.temp_size_in_bytes
             + memory.generated_code_size_in_bytes)
    return TargetPlan(
        compiled=True, argument_bytes=int(memory.argument_size_in_bytes),
        output_bytes=int(memory.output_size_in_bytes),
        alias_bytes=int(memory.alias_size_in_bytes),
        temp_bytes=int(memory.temp_size_in_bytes),
        generated_code_bytes=int(memory.generated_code_size_in_bytes),
        # The runtime reserves the whole temporary buffer for the step, so the total is what
        # the chip must hold; XLA's heap-simulated peak is at most that.
        peak_bytes_per_chip=int(max(total, getattr(memory, "peak_memory_in_bytes", 0))),
        flops_per_chip=flops / tpu.chips,
        # XLA counts a loop body once: the accumulation loop runs micro_batches times.
        bytes_accessed_per_chip=float(cost.get("bytes accessed", 0.0)) * loop_runs,
        compiled_flops_per_chip=float(cost.get("flops", 0.0)),
        notes=tuple(notes + flop_notes), **common)


def _step_flops(cfg: RunConfig, step: CompiledStep) -> tuple[float | None, list[str]]:
    """FLOPs of one step over all chips (None if XLA could not count), and how they were
    counted: XLA's cost analysis of the program before partitioning
    (`tpu_compile._program_flops`), whose micro-batch loop body it counts once, so x
    `train.micro_batches` (the optimizer update outside the loop is then counted too often: a
    slight overestimate); Mosaic kernels (splash attention) are opaque to the analysis, so
    their causal FLOPs are added (`_attention_flops`).
    """
    if step.program_flops is None:
        return None, []
    notes = []
    flops = step.program_flops * cfg.train.micro_batches
    if cfg.train.micro_batches > 1:
        notes.append(f"FLOPs x {cfg.train.micro_batches} for the accumulation loop (XLA "
                     "counts a loop body once)")
    if step.mosaic_kernels:
        attention = _attention_flops(cfg, step.model_cfg, causal=True)
        flops += attention
        notes.append(f"+{attention:.3e} FLOPs of splash attention (causal, by formula): XLA's "
                     "cost analysis cannot see into Mosaic kernels")
    return flops, notes


def _model_flops(cfg: RunConfig, step: CompiledStep) -> float:
    """The MFU numerator: `train_flops_per_token` x tokens, whose attention is the dense
    (T x T) one; a causal kernel (splash) computes half of it, so half is taken off."""
    n_train, n_frozen = _param_count(step.trainable), _param_count(step.frozen)
    t = cfg.data.max_length
    flops = train_flops_per_token(step.model_cfg, t, n_train / max(n_train + n_frozen, 1))
    flops *= cfg.train.batch_size * t
    if step.mosaic_kernels:
        flops -= _attention_flops(cfg, step.model_cfg, causal=True, remat=False)
    return flops


def _param_count(tree: Any) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _attention_flops(cfg: RunConfig, m: ModelConfig, *, causal: bool, remat: bool = True
                     ) -> float:
    """Attention FLOPs of a step (scores and values): forward 4 x L x H x hd x T per token
    for the dense (T x T) product, half that causal; backward twice the forward; with remat
    one more forward (every policy recomputes attention)."""
    t = cfg.data.max_length
    passes = 3 + (m.remat != "none" if remat else 0)
    forward = attention_forward_flops_per_token(m, t)
    return passes * forward * (0.5 if causal else 1.0) * cfg.train.batch_size * t


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _notes(cfg: RunConfig, step: CompiledStep) -> Iterator[str]:
    model_cfg = step.model_cfg
    shards = step.mesh.shape["data"] * step.mesh.shape["fsdp"]
    rows = cfg.train.batch_size // cfg.train.micro_batches
    if rows % shards:
        yield (f"{rows} rows per micro-batch do not split over data x fsdp = {shards} chips: "
               "the batch is replicated (make train.batch_size / train.micro_batches a "
               f"multiple of {shards})")
    if model_cfg.dtype == "float32":
        yield ("model.dtype=float32: the roofline uses the bf16 peak, which float32 matmuls "
               "do not reach")
    yield f"kernels {model_cfg.kernels}, remat {model_cfg.remat}"


def with_overrides(cfg: RunConfig, overrides: tuple[str, ...]) -> RunConfig:
    """`cfg` with ``key=value`` overrides applied and validated again."""
    try:
        return run_config_from_dict(apply_overrides(cfg.to_dict(), overrides))
    except ConfigError as exc:
        raise PlanError(f"overrides {' '.join(overrides)}: {exc}") from None


@dataclass
class PlanReport:
    """The plan of the run as configured, and when it does not fit, the first change that
    does (compiled to prove it) and every change tried on the way."""

    plan: TargetPlan
    suggestion: TargetPlan | None = None
    tried: list[TargetPlan] = field(default_factory=list)
    gave_up: str | None = None  # why no suggestion, when the search found none

    def to_json(self) -> dict[str, Any]:
        out = self.plan.to_json()
        out["suggestion"] = self.suggestion.to_json() if self.suggestion else None
        out["tried"] = [{"overrides": list(p.overrides), "fits": p.fits,
                         "peak_bytes_per_chip": p.peak_bytes_per_chip} for p in self.tried]
        out["gave_up"] = self.gave_up
        return out
