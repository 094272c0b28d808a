"""`jaxtune launch tpu`: train on a Cloud TPU VM slice (optionally through a queued resource).

Builds the jaxtune wheel, creates the TPU, installs jaxtune[train] + jax[tpu] on every worker,
runs `jaxtune train` on all of them at once (JAX finds the slice itself; the launcher exports
the host count so a wrong detection fails loudly) and streams their output here. Before any of
that, the run's train step is compiled for the slice here (`fit_check`; libtpu) and a run that
does not fit in HBM is refused, unless ``--skip-plan``. ``--dry-run`` prints the plan as ``#``
comments, then the commands, one per line, and runs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import importlib.metadata
import logging
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from infra.launch.fit_check import as_comments, check_fits
from infra.launch.run_inputs import collect_run_inputs
from infra.launch.tpu_plan import Step, TpuLaunchSpec, build_plan
from infra.launch.tpu_types import parse_tpu_type
from train_jax.config.run_config import RunConfig, load_raw_run_config

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_DEFAULT_RUN_DIR = next(f.default for f in dataclasses.fields(RunConfig) if f.name == "run_dir")


class LaunchError(ValueError):
    """A launch argument is invalid or a launch command failed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `jaxtune launch tpu` options."""
    parser.add_argument("--tpu-type", required=True,
                        help="accelerator type: v4-N, v5p-N (N = TensorCores), v5litepod-N, "
                             "v6e-N (N = chips); e.g. v5p-16 = 8 chips on 2 hosts")
    parser.add_argument("--zone", required=True, help="GCP zone, e.g. us-east5-a")
    parser.add_argument("--config", required=True, help="run config YAML (as for jaxtune train)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides passed to jaxtune train; multi-host slices "
                             "need run_dir=gs://... (one shared place for checkpoints)")
    parser.add_argument("--project", help="GCP project (default: gcloud's configured one)")
    parser.add_argument("--name", help="TPU / queued resource name (default: jaxtune-USER-TYPE)")
    parser.add_argument("--queued", action="store_true",
                        help="request a queued resource instead of creating the VM directly")
    parser.add_argument("--spot", action="store_true", help="use Spot (preemptible) capacity")
    parser.add_argument("--reuse", action="store_true",
                        help="the TPU NAME already exists: skip creation, reinstall and train")
    parser.add_argument("--runtime-version", help="TPU VM software version (default per "
                                                  "generation, e.g. v2-alpha-tpuv5 for v5p)")
    parser.add_argument("--source", default=".", help="jaxtune source tree to ship (default: .)")
    parser.add_argument("--dist-dir", default="build/dist",
                        help="where the wheel is built (default: build/dist, git-ignored)")
    parser.add_argument("--delete", action="store_true",
                        help="delete the TPU when training ends (also after a failure)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and every command, in order, one per line; run "
                             "nothing")
    parser.add_argument("--skip-plan", action="store_true",
                        help="do not compile the run for the slice first (the check needs "
                             "libtpu here and refuses a run that does not fit in HBM)")
    parser.add_argument("--poll-seconds", type=float, default=30.0,
                        help="seconds between state checks while waiting (default: 30)")
    parser.add_argument("--wait-minutes", type=float, default=120.0,
                        help="give up waiting for the TPU after this long (default: 120)")


def _default_name(accelerator_type: str) -> str:
    user = re.sub(r"[^a-z0-9]+", "-", getpass.getuser().lower()).strip("-") or "user"
    return f"jaxtune-{user}-{accelerator_type}"[:63].rstrip("-")


def _wheel_name() -> str:
    # The wheel built from the checkout carries the installed jaxtune's version (pyproject).
    version = importlib.metadata.version("jaxtune")
    return f"jaxtune-{version}-py3-none-any.whl"


def spec_from_args(args: argparse.Namespace) -> TpuLaunchSpec:
    """Validate the command line into a `TpuLaunchSpec` (raises `ValueError`s with the fix)."""
    tpu = parse_tpu_type(args.tpu_type)
    name = args.name or _default_name(tpu.accelerator_type)
    if not _NAME_RE.match(name):
        raise LaunchError(f"invalid --name {name!r}: use lowercase letters, digits and '-', "
                          "starting with a letter, at most 63 characters")
    if not _ZONE_RE.match(args.zone):
        raise LaunchError(f"invalid --zone {args.zone!r}: expected a zone such as us-east5-a")
    # The training config loader validates here: a typo costs an error, not a TPU hour.
    raw = load_raw_run_config(args.config, args.overrides)
    run_dir = str(raw.get("run_dir") or _DEFAULT_RUN_DIR)
    if tpu.multi_host and not (run_dir.startswith("gs://") or Path(run_dir).is_absolute()):
        raise LaunchError(
            f"run_dir {run_dir!r} would be a separate local folder on each of the {tpu.hosts} "
            "hosts, and a multi-host checkpoint needs one shared place: pass "
            "run_dir=gs://BUCKET/PATH (or an absolute path on a shared file system)")
    return TpuLaunchSpec(
        name=name, zone=args.zone, tpu=tpu, config_path=args.config,
        overrides=tuple(args.overrides), wheel_name=_wheel_name(), source_dir=args.source,
        dist_dir=args.dist_dir, project=args.project, queued=args.queued, spot=args.spot,
        runtime_version=args.runtime_version, python=sys.executable, delete=args.delete,
        reuse=args.reuse, inputs=collect_run_inputs(raw),
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `jaxtune launch tpu`."""
    spec = spec_from_args(args)
    fit = None if args.skip_plan else check_fits(args.config, args.overrides, spec.tpu)
    steps = build_plan(spec)
    if args.dry_run:
        if fit is not None:
            sys.stdout.write(as_comments(fit))
        for step in steps:
            print(shlex.join(step.argv))
        return 0
    if fit is not None:
        logger.info("the run fits:\n%s", fit)
    logger.info("launching on %s: %d host(s), %d chips, topology %s", spec.tpu.accelerator_type,
                spec.tpu.hosts, spec.tpu.chips, spec.tpu.topology)
    try:
        for step in (s for s in steps if s.kind != "cleanup"):
            _execute(step, spec, poll_seconds=args.poll_seconds,
                     wait_seconds=args.wait_minutes * 60)
    finally:
        for step in (s for s in steps if s.kind == "cleanup"):
            logger.info("%s: %s", step.description, shlex.join(step.argv))
            if subprocess.run(step.argv, check=False).returncode != 0:
                logger.error("cleanup failed; delete %s by hand: %s", spec.name,
                             shlex.join(step.argv))
    return 0


def _execute(step: Step, spec: TpuLaunchSpec, *, poll_seconds: float, wait_seconds: float
             ) -> None:
    logger.info("%s: %s", step.description, shlex.join(step.argv))
    if step.kind == "wait":
        _wait(step, poll_seconds=poll_seconds, wait_seconds=wait_seconds)
        return
    # Output is inherited, not captured: `ssh --worker=all` streams every worker's log here.
    result = subprocess.run(step.argv, check=False)
    if result.returncode != 0:
        raise LaunchError(f"{step.description} failed (exit {result.returncode}): "
                          f"{shlex.join(step.argv)}")
    if step.argv[:3] == (spec.python, "-m", "pip") and step.argv[3] == "wheel":
        built = Path(spec.dist_dir) / spec.wheel_name
        if not built.is_file():
            raise LaunchError(f"expected the wheel {built} after the build; found "
                              f"{sorted(p.name for p in Path(spec.dist_dir).glob('*.whl'))}")


def _wait(step: Step, *, poll_seconds: float, wait_seconds: float) -> None:
    start = time.monotonic()
    state = ""
    while time.monotonic() - start < wait_seconds:
        result = subprocess.run(step.argv, check=False, capture_output=True, text=True)
        state = result.stdout.strip()
        if result.returncode == 0 and state in step.until:
            logger.info("state %s after %.0f s", state, time.monotonic() - start)
            return
        if state in step.fail_on:
            raise LaunchError(f"{step.description}: the TPU is {state}")
        logger.info("state %s after %.0f s (waiting for %s, up to %.0f min)",
                    state or result.stderr.strip()[-200:], time.monotonic() - start,
                    "/".join(step.until), wait_seconds / 60)
        time.sleep(poll_seconds)
    raise LaunchError(f"{step.description}: still {state or 'unknown'} after "
                      f"{wait_seconds / 60:.0f} min")
