"""The gcloud commands that take a run from this machine to every worker of a Cloud TPU slice.

`build_plan(spec)` is pure: it returns the ordered steps; `tpu_cli` prints them (dry run) or
runs them. Commands are argument lists (never a local shell); the only shell involved is the
remote one that `gcloud ... ssh --command` starts on each worker, whose command string is
built with `shlex.join`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from infra.launch.tpu_types import TpuSlice
from train_jax.distributed import ENV_TPU_HOSTS

REMOTE_DIR = "/tmp/jaxtune"  # on every worker: the wheel and the run config land here
REMOTE_VENV = "jaxtune-venv"  # relative to the ssh login directory (the user's home)
PYTHON_VERSION = "3.11"


@dataclass(frozen=True)
class TpuLaunchSpec:
    """Everything the TPU launch needs, already validated."""

    name: str
    zone: str
    tpu: TpuSlice
    config_path: str  # local path of the run config YAML
    overrides: tuple[str, ...]
    wheel_name: str  # file name of the jaxtune wheel built from `source_dir`
    source_dir: str = "."
    dist_dir: str = "dist"
    project: str | None = None
    queued: bool = False
    spot: bool = False
    runtime_version: str | None = None  # default: the generation's runtime
    python: str = "python3"
    delete: bool = False

    @property
    def runtime(self) -> str:
        """The TPU VM software version to boot."""
        return self.runtime_version or self.tpu.generation.runtime_version


@dataclass(frozen=True)
class Step:
    """One command of the launch.

    kind "run": run once, fail on a non-zero exit. "wait": run repeatedly until its output is
    one of `until` (fail on `fail_on`). "cleanup": always runs at the end, even after a failure.
    """

    kind: Literal["run", "wait", "cleanup"]
    argv: tuple[str, ...]
    description: str
    until: tuple[str, ...] = ()
    fail_on: tuple[str, ...] = ()


def _common_flags(spec: TpuLaunchSpec) -> list[str]:
    flags = [f"--zone={spec.zone}"]
    if spec.project:
        flags.append(f"--project={spec.project}")
    return flags


def _ssh_all(spec: TpuLaunchSpec, *commands: list[str], env: dict[str, str] | None = None
             ) -> tuple[str, ...]:
    """`gcloud ... ssh --worker=all` running `commands` one after another on every worker."""
    remote = " && ".join(shlex.join(argv) for argv in commands)
    if env:
        remote = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + remote
    return ("gcloud", "compute", "tpus", "tpu-vm", "ssh", spec.name, *_common_flags(spec),
            "--worker=all", f"--command={remote}")


def create_steps(spec: TpuLaunchSpec) -> list[Step]:
    """Create the TPU VM (or queued resource) and wait until it can take work."""
    accel = f"--accelerator-type={spec.tpu.accelerator_type}"
    spot = ["--spot"] if spec.spot else []
    if spec.queued:
        create = ("gcloud", "compute", "tpus", "queued-resources", "create", spec.name,
                  f"--node-id={spec.name}", *_common_flags(spec), accel,
                  f"--runtime-version={spec.runtime}", *spot)
        wait = ("gcloud", "compute", "tpus", "queued-resources", "describe", spec.name,
                *_common_flags(spec), "--format=value(state.state)")
        return [
            Step("run", create, "request the queued resource"),
            Step("wait", wait, "wait until the queued resource is ACTIVE",
                 until=("ACTIVE",), fail_on=("FAILED", "SUSPENDED")),
        ]
    create = ("gcloud", "compute", "tpus", "tpu-vm", "create", spec.name, *_common_flags(spec),
              accel, f"--version={spec.runtime}", *spot)
    wait = ("gcloud", "compute", "tpus", "tpu-vm", "describe", spec.name, *_common_flags(spec),
            "--format=value(state)")
    return [
        Step("run", create, "create the TPU VM"),
        Step("wait", wait, "wait until the TPU VM is READY", until=("READY",),
             fail_on=("PREEMPTED", "TERMINATED")),
    ]


def build_step(spec: TpuLaunchSpec) -> Step:
    """Build the jaxtune wheel here first: a broken checkout fails before any TPU is billed."""
    return Step("run", (spec.python, "-m", "pip", "wheel", "--no-deps",
                        f"--wheel-dir={spec.dist_dir}", spec.source_dir),
                "build the jaxtune wheel")


def install_steps(spec: TpuLaunchSpec) -> list[Step]:
    """Copy the wheel and the run config to every worker and install them there."""
    wheel = str(PurePosixPath(spec.dist_dir) / spec.wheel_name)
    remote_wheel = f"{REMOTE_DIR}/{spec.wheel_name}"
    mkdir = _ssh_all(spec, ["mkdir", "-p", REMOTE_DIR])
    scp = ("gcloud", "compute", "tpus", "tpu-vm", "scp", wheel, spec.config_path,
           f"{spec.name}:{REMOTE_DIR}/", *_common_flags(spec), "--worker=all")
    # TPU VM images ship Python 3.10 and jaxtune needs >= 3.11: uv provides a managed
    # interpreter in a venv, so nothing of the image's Python is touched.
    install = _ssh_all(
        spec,
        ["python3", "-m", "pip", "install", "--user", "--upgrade", "uv"],
        ["python3", "-m", "uv", "venv", "--allow-existing", "--python", PYTHON_VERSION,
         REMOTE_VENV],
        ["python3", "-m", "uv", "pip", "install", "--python", f"{REMOTE_VENV}/bin/python",
         "jax[tpu]", f"{remote_wheel}[train]"],
    )
    return [
        Step("run", mkdir, "make the staging directory on every worker"),
        Step("run", scp, "copy the wheel and the run config to every worker"),
        Step("run", install, "install jaxtune[train] and jax[tpu] on every worker"),
    ]


def train_step(spec: TpuLaunchSpec) -> Step:
    """`jaxtune train` on all workers at once; gcloud streams every worker's output here."""
    remote_config = f"{REMOTE_DIR}/{PurePosixPath(spec.config_path).name}"
    argv = [f"{REMOTE_VENV}/bin/jaxtune", "train", "--config", remote_config, *spec.overrides]
    env = {ENV_TPU_HOSTS: str(spec.tpu.hosts)} if spec.tpu.multi_host else None
    return Step("run", _ssh_all(spec, argv, env=env),
                f"train on {spec.tpu.hosts} host(s) ({spec.tpu.chips} chips)")


def delete_step(spec: TpuLaunchSpec) -> Step:
    """Delete what `create_steps` made (queued resources need --force to take the VM too)."""
    if spec.queued:
        argv = ("gcloud", "compute", "tpus", "queued-resources", "delete", spec.name,
                *_common_flags(spec), "--force", "--quiet")
    else:
        argv = ("gcloud", "compute", "tpus", "tpu-vm", "delete", spec.name,
                *_common_flags(spec), "--quiet")
    return Step("cleanup", argv, "delete the TPU")


def build_plan(spec: TpuLaunchSpec) -> list[Step]:
    """All steps of a launch, in the order they run."""
    steps = [build_step(spec), *create_steps(spec), *install_steps(spec), train_step(spec)]
    if spec.delete:
        steps.append(delete_step(spec))
    return steps
