"""When a run does not fit its TPU slice: find the first settings change that does, and prove it.

Changes are tried cumulatively, each one compiled for the target (`aot_plan.plan_for_target`),
and the first that fits is reported with its plan:

1. the layer scan (`model.scan_layers=true`: the compiler keeps one block's gathered weights
   and temporaries alive at a time; no extra compute);
2. full remat (`model.remat=full`: each block keeps only its input; about one more forward);
3. the whole slice on the fsdp axis (`mesh.data=1 mesh.fsdp=-1 mesh.tensor=1`): parameters,
   gradients and AdamW state split over every chip;
4. the TPU kernels (`model.kernels=tpu`: splash attention keeps no (T x T) scores), when the
   config pins another backend;
5. gradient accumulation: more `train.micro_batches` (fewer rows per chip per pass, the same
   global batch), by the factor the temporaries have to shrink, then doubled until it fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from train_jax.config.run_config import RunConfig
from train_jax.sharding.tpu_slices import TpuSlice
from train_jax.train.aot_plan import PlanReport, TargetPlan, plan_for_target, with_overrides
from train_jax.train.tpu_compile import PlanError

MAX_COMPILES = 6  # compiles of one search (an 8B step takes minutes on a CPU host)


def _setting_changes(cfg: RunConfig, tpu: TpuSlice) -> Iterator[tuple[str, ...]]:
    if not cfg.model.scan_layers:
        yield ("model.scan_layers=true",)
    if cfg.model.remat != "full":
        yield ("model.remat=full",)
    sizes = (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    rows = cfg.train.batch_size // cfg.train.micro_batches
    if sizes not in ((1, -1, 1), (1, tpu.chips, 1)) and rows % tpu.chips == 0:
        yield ("mesh.data=1", "mesh.fsdp=-1", "mesh.tensor=1")
    if cfg.model.kernels not in ("auto", "tpu"):
        yield ("model.kernels=tpu",)


def _micro_batches(cfg: RunConfig, last: TargetPlan) -> int | None:
    """More micro-batches, by the factor the temporaries must shrink; None when none helps."""
    resident = last.peak_bytes_per_chip - last.temp_bytes  # state and batch: stays
    room = last.hbm_bytes_per_chip - resident
    if room <= 0 or last.temp_bytes <= 0:
        return None
    factor = max(2, math.ceil(last.temp_bytes / room))
    shards = last.mesh["data"] * last.mesh["fsdp"]
    batch, current = cfg.train.batch_size, cfg.train.micro_batches
    for micro in range(current * factor, batch + 1):
        if batch % micro == 0 and (batch // micro) % shards == 0:
            return micro
    return None


def find_fit(cfg: RunConfig, tpu: TpuSlice, plan: TargetPlan) -> PlanReport:
    """`plan` (which does not fit) with the first fitting change, or why there is none."""
    report = PlanReport(plan)
    applied: tuple[str, ...] = ()
    last = plan

    def attempt(overrides: tuple[str, ...]) -> TargetPlan:
        tried = plan_for_target(with_overrides(cfg, overrides), tpu, overrides)
        report.tried.append(tried)
        return tried

    for change in _setting_changes(cfg, tpu):
        applied += change
        last = attempt(applied)
        if last.fits:
            report.suggestion = last
            return report
    current = with_overrides(cfg, applied)
    while len(report.tried) < MAX_COMPILES:
        micro = _micro_batches(current, last)
        if micro is None:
            break
        try:
            last = attempt((*applied, f"train.micro_batches={micro}"))
        except PlanError:
            break
        if last.fits:
            report.suggestion = last
            return report
        current = with_overrides(cfg, last.overrides)
    resident = last.peak_bytes_per_chip - last.temp_bytes
    report.gave_up = (
        f"nothing tried fits: even with {' '.join(last.overrides) or 'the config as is'}, "
        f"{_gib(last.peak_bytes_per_chip)} per chip ({_gib(resident)} of it parameters, "
        f"optimizer state and batch) exceed {_gib(last.hbm_bytes_per_chip)}; use a slice with "
        "more chips or train fewer parameters (method.name=lora)")
    return report


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"
