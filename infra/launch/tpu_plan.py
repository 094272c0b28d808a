"""The gcloud commands that take a run from this machine to every worker of a Cloud TPU slice.

`build_plan(spec)` is pure: it returns the ordered steps; `tpu_cli` prints them (dry run) or
runs them. Commands are argument lists (never a local shell); the only shell involved is the
remote one that `gcloud ... ssh --command` starts on each worker, whose command string is
built with `shlex.join`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from infra.launch.run_inputs import RunInputs
from infra.launch.tpu_types import TpuSlice, launch_facts
from train_jax.distributed import ENV_TPU_HOSTS

# On every worker: the wheel, the run config and the run's local inputs (at the same relative
# paths as here) land in REMOTE_DIR, which is also the working directory of `jaxtune train`.
REMOTE_DIR = "/tmp/jaxtune"
REMOTE_VENV = f"{REMOTE_DIR}/venv"
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
    dist_dir: str = "build/dist"
    project: str | None = None
    queued: bool = False
    spot: bool = False
    runtime_version: str | None = None  # default: the generation's runtime
    python: str = "python3"
    inputs: RunInputs = field(default_factory=lambda: RunInputs((), ()))
    delete: bool = False
    reuse: bool = False  # the TPU already exists: skip creation, only wait for it

    @property
    def runtime(self) -> str:
        """The TPU VM software version to boot."""
        return self.runtime_version or launch_facts(self.tpu).runtime_version


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


def _ssh_all(spec: TpuLaunchSpec, *commands: list[str]) -> tuple[str, ...]:
    """`gcloud ... ssh --worker=all` running `commands` one after another on every worker."""
    remote = " && ".join(shlex.join(argv) for argv in commands)
    return ("gcloud", "compute", "tpus", "tpu-vm", "ssh", spec.name, *_common_flags(spec),
            "--worker=all", f"--command={remote}")


def _scp_all(spec: TpuLaunchSpec, sources: list[str], remote_dir: str, recurse: bool = False
             ) -> tuple[str, ...]:
    flags = ["--recurse"] if recurse else []
    return ("gcloud", "compute", "tpus", "tpu-vm", "scp", *flags, *sources,
            f"{spec.name}:{remote_dir}/", *_common_flags(spec), "--worker=all")


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


def _remote_parent(path: str) -> str:
    parent = str(PurePosixPath(path).parent)
    return REMOTE_DIR if parent == "." else f"{REMOTE_DIR}/{parent}"


def staging_steps(spec: TpuLaunchSpec) -> list[Step]:
    """Make the staging directories and copy the wheel, the config and the run's inputs."""
    wheel = str(PurePosixPath(spec.dist_dir) / spec.wheel_name)
    files_by_dir: dict[str, list[str]] = {}
    for path in spec.inputs.files:
        files_by_dir.setdefault(_remote_parent(path), []).append(path)
    dirs = dict.fromkeys([REMOTE_DIR, *files_by_dir,
                          *(_remote_parent(p) for p in spec.inputs.folders)])
    steps = [
        Step("run", _ssh_all(spec, ["mkdir", "-p", *dirs]),
             "make the staging directories on every worker"),
        Step("run", _scp_all(spec, [wheel, spec.config_path], REMOTE_DIR),
             "copy the wheel and the run config to every worker"),
    ]
    for remote_dir, paths in files_by_dir.items():
        steps.append(Step("run", _scp_all(spec, paths, remote_dir),
                          f"copy {', '.join(paths)} to every worker"))
    for folder in spec.inputs.folders:
        steps.append(Step("run", _scp_all(spec, [folder], _remote_parent(folder), recurse=True),
                          f"copy the folder {folder} to every worker"))
    return steps


def install_step(spec: TpuLaunchSpec) -> Step:
    """Install jaxtune[train] and jax[tpu] into a Python 3.11 venv on every worker."""
    # TPU VM images ship Python 3.10 and jaxtune needs >= 3.11: uv provides a managed
    # interpreter in a venv, so nothing of the image's Python is touched.
    install = _ssh_all(
        spec,
        ["python3", "-m", "pip", "install", "--user", "--upgrade", "uv"],
        ["python3", "-m", "uv", "venv", "--allow-existing", "--python", PYTHON_VERSION,
         REMOTE_VENV],
        ["python3", "-m", "uv", "pip", "install", "--python", f"{REMOTE_VENV}/bin/python",
         "jax[tpu]", f"{REMOTE_DIR}/{spec.wheel_name}[train]"],
    )
    return Step("run", install, "install jaxtune[train] and jax[tpu] on every worker")


def train_step(spec: TpuLaunchSpec) -> Step:
    """`jaxtune train` on all workers at once; gcloud streams every worker's output here."""
    remote_config = f"{REMOTE_DIR}/{PurePosixPath(spec.config_path).name}"
    train = [f"{REMOTE_VENV}/bin/jaxtune", "train", "--config", remote_config, *spec.overrides]
    if spec.tpu.multi_host:
        train = ["env", f"{ENV_TPU_HOSTS}={spec.tpu.hosts}", *train]
    return Step("run", _ssh_all(spec, ["cd", REMOTE_DIR], train),
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
    create = create_steps(spec)
    if spec.reuse:
        create = [step for step in create if step.kind == "wait"]
    steps = [build_step(spec), *create, *staging_steps(spec), install_step(spec),
             train_step(spec)]
    if spec.delete:
        steps.append(delete_step(spec))
    return steps
