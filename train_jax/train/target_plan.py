"""`jaxtune plan --target`: the AOT plan of a run on a TPU slice as one report, text or JSON.

The entry point of the CLI and the launchers: `plan_target(cfg, "v5p-16")` compiles the run for
the slice (`aot_plan`), and when it does not fit searches the first change that does
(`aot_fit`); `render_report` prints it as a table, `PlanReport.to_json` as one JSON object.
"""

from __future__ import annotations

from train_jax.config.run_config import RunConfig
from train_jax.sharding.tpu_slices import parse_tpu_type
from train_jax.train.aot_fit import find_fit
from train_jax.train.aot_plan import TIGHT_FRACTION, PlanReport, TargetPlan, plan_for_target
from train_jax.train.plan import format_bytes


def plan_target(cfg: RunConfig, target: str, topology: str | None = None, *,
                suggest: bool = True) -> PlanReport:
    """Compile `cfg` for the TPU slice `target` (e.g. ``v5p-16``); search a fit if needed."""
    tpu = parse_tpu_type(target, topology)
    plan = plan_for_target(cfg, tpu)
    if plan.fits or not suggest:
        return PlanReport(plan)
    return find_fit(cfg, tpu, plan)


def _chips(plan: TargetPlan) -> str:
    return f"{plan.chips} chip{'' if plan.chips == 1 else 's'}"


def _verdict(plan: TargetPlan) -> str:
    share = plan.peak_bytes_per_chip / plan.hbm_bytes_per_chip
    if not plan.fits:
        return f"DOES NOT FIT ({share:.0%} of HBM)"
    return f"fits ({share:.0%} of HBM{', tight' if share > TIGHT_FRACTION else ''})"


def render_plan(plan: TargetPlan) -> list[str]:
    """The lines of one plan: memory per chip against HBM, FLOPs, roofline."""
    applied = f" with {' '.join(plan.overrides)}" if plan.overrides else ""
    mesh = ", ".join(f"{k} {v}" for k, v in plan.mesh.items())
    b = format_bytes
    return [
        (f"{plan.target}{applied}: {_chips(plan)} on {plan.hosts} host(s), topology "
         f"{plan.topology}, mesh {mesh}; {'compiled' if plan.compiled else 'refused by XLA'} "
         f"in {plan.compile_s:.1f} s"),
        "  per chip:",
        f"    arguments      {b(plan.argument_bytes):>11}  (parameters, optimizer state, batch)",
        (f"    outputs        {b(plan.output_bytes):>11}  ({b(plan.alias_bytes)} of them "
         "written into donated arguments)"),
        f"    temporaries    {b(plan.temp_bytes):>11}  (activations, gradients, scratch)",
        (f"    total          {b(plan.peak_bytes_per_chip):>11}  of "
         f"{b(plan.hbm_bytes_per_chip)} HBM: {_verdict(plan)}"),
        *_compute_lines(plan),
        *(f"  note: {note}" for note in plan.notes),
    ]


def _compute_lines(plan: TargetPlan) -> list[str]:
    model = f"{plan.model_flops_per_step:.3e} model ({plan.tokens_per_step} tokens)"
    if plan.flops_per_step is None:
        return [f"  FLOPs per step: not counted; {model}"]
    lines = [f"  FLOPs per step: {plan.flops_per_step:.3e} by XLA ({_chips(plan)}), {model}"]
    if plan.step_time_s is not None and plan.mfu is not None:
        lines.append(
            f"  roofline step time >= {plan.step_time_s * 1e3:.1f} ms (compute "
            f"{plan.compute_time_s * 1e3:.1f} ms at {plan.peak_flops_per_chip / 1e12:.0f} "
            f"TFLOP/s bf16, HBM traffic {plan.memory_time_s * 1e3:.1f} ms at "
            f"{plan.hbm_bandwidth_per_chip / 1e9:.0f} GB/s per chip); MFU <= {plan.mfu:.1%}")
    return lines


def render_report(report: PlanReport) -> str:
    """The report as text: the plan, then the change that fits (or why there is none)."""
    lines = render_plan(report.plan)
    if report.plan.fits:
        return "\n".join(lines)
    for tried in report.tried:
        if tried is not report.suggestion:
            lines.append(f"tried {' '.join(tried.overrides)}: "
                         f"{format_bytes(tried.peak_bytes_per_chip)} per chip, does not fit")
    if report.suggestion is not None:
        lines += ["", f"fits with: {' '.join(report.suggestion.overrides)}",
                  *render_plan(report.suggestion)]
    elif report.gave_up:
        lines += ["", report.gave_up]
    return "\n".join(lines)
