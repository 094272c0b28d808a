"""The fit check a TPU launch runs before it creates anything: the run's AOT plan for the slice.

`jaxtune launch tpu` and `jaxtune launch gke --accelerator tpu` compile the run's train step for
their slice on this machine (`train_jax.train.target_plan`, through libtpu) and refuse a run
that does not fit in HBM, printing the plan on stderr, unless `--skip-plan`. JAX and libtpu are
imported only here and only when the check runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from infra.launch.tpu_types import TpuSlice

SKIP_HINT = "--skip-plan launches without the check"


class DoesNotFitError(ValueError):
    """The run's train step needs more memory per chip than the slice has."""


def check_fits(config_path: str, overrides: Sequence[str], tpu: TpuSlice) -> str:
    """The plan of the run on `tpu` as text; raises `DoesNotFitError` (after writing the plan
    to stderr) when it does not fit."""
    from train_jax.config.run_config import load_run_config
    from train_jax.train.target_plan import plan_target, render_report
    from train_jax.train.tpu_compile import LibtpuMissingError, use_host_cpu

    use_host_cpu()
    cfg = load_run_config(config_path, overrides)
    try:
        report = plan_target(cfg, tpu.accelerator_type, tpu.topology)
    except LibtpuMissingError as exc:
        raise LibtpuMissingError(f"{exc}; {SKIP_HINT}") from None
    text = render_report(report)
    if report.plan.fits:
        return text
    sys.stderr.write(text + "\n")
    plan = report.plan
    fix = (f"it fits with {' '.join(report.suggestion.overrides)}" if report.suggestion
           else "nothing tried fits")
    raise DoesNotFitError(
        f"the run does not fit {tpu.accelerator_type}: {plan.peak_bytes_per_chip / 2**30:.1f} "
        f"GiB per chip at peak, {plan.hbm_bytes_per_chip / 2**30:.0f} GiB of HBM; {fix} (plan "
        f"above); {SKIP_HINT}")


def as_comments(text: str) -> str:
    """`text` as ``#`` comment lines (a dry run's output stays a script or YAML)."""
    return "".join(f"# {line}".rstrip() + "\n" for line in text.splitlines())
