"""`jaxtune launch tpu`: golden dry runs, validation errors, and a real run against a fake gcloud."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from infra.cli import main
from infra.launch.tpu_plan import TpuLaunchSpec, build_plan
from infra.launch.tpu_types import parse_tpu_type
from tests.infra.golden_files import assert_matches_golden
from train_jax.distributed import DistributedConfig, resolve

REPO = Path(__file__).resolve().parents[3]
CONFIG = "tests/infra/golden/run_config.yaml"


def _dry_run(capsys, *argv: str) -> str:
    # The fixture config's model is a hub id (no config.json offline): these tests are about the
    # commands; the fit check has its own (test_launch_plan.py).
    assert main(["launch", "tpu", *argv, "--dry-run", "--skip-plan"]) == 0
    # The local interpreter path differs between machines; everything else must match.
    return capsys.readouterr().out.replace(shlex.quote(sys.executable), "<python>")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.fixture
def no_subprocess(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"--dry-run ran a command: {args}")
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def test_dry_run_tpu_vm_golden(capsys, no_subprocess):
    out = _dry_run(capsys, "--tpu-type", "v5p-16", "--zone", "us-east5-a", "--config", CONFIG,
                   "optimizer.learning_rate=3e-5", "run_dir=gs://my-bucket/runs/viggo-v5p16",
                   "--name", "jaxtune-viggo", "--delete")
    assert_matches_golden("tpu_v5p-16_dry_run.txt", out)


def test_dry_run_queued_spot_golden(capsys, no_subprocess):
    out = _dry_run(capsys, "--tpu-type", "v5litepod-16", "--zone", "us-west4-a", "--config",
                   CONFIG, "--queued", "--spot", "--project", "my-project", "--name", "qr-viggo")
    assert_matches_golden("tpu_v5litepod-16_queued_dry_run.txt", out)


def test_single_host_slice_sets_no_multihost_env(capsys, no_subprocess):
    out = _dry_run(capsys, "--tpu-type", "v6e-8", "--zone", "us-east5-b", "--config", CONFIG,
                   "--name", "one-host")
    train = [line for line in out.splitlines() if " train " in line]
    assert len(train) == 1 and "JAXTUNE_TPU_HOSTS" not in train[0]


def test_rendered_train_env_reaches_distributed_resolution():
    spec = TpuLaunchSpec(name="x", zone="us-east5-a", tpu=parse_tpu_type("v5p-32"),
                         config_path=CONFIG, overrides=(), wheel_name="w.whl")
    train_argv = build_plan(spec)[-1].argv
    remote = next(a for a in train_argv if a.startswith("--command="))[len("--command="):]
    words = shlex.split(remote)
    assert words[:3] == ["cd", "/tmp/jaxtune", "&&"] and words[3] == "env"
    end = next(i for i, w in enumerate(words[4:], 4) if "=" not in w)
    env = dict(w.split("=", 1) for w in words[4:end])
    assert words[end:end + 2] == ["/tmp/jaxtune/venv/bin/jaxtune", "train"]
    plan = resolve(DistributedConfig(), env)
    assert plan.mode == "tpu_auto" and plan.expected_processes == 4


def test_multi_host_needs_a_shared_run_dir(capsys, no_subprocess):
    assert main(["launch", "tpu", "--tpu-type", "v5p-16", "--zone", "us-east5-a", "--config",
                 CONFIG, "run_dir=runs/local", "--dry-run"]) == 1
    assert "run_dir=gs://BUCKET/PATH" in capsys.readouterr().err
    # One host has nothing to share with: a local run_dir is fine there.
    assert main(["launch", "tpu", "--tpu-type", "v5p-8", "--zone", "us-east5-a", "--config",
                 CONFIG, "run_dir=runs/local", "--dry-run", "--skip-plan"]) == 0


def test_the_configs_local_inputs_are_shipped_to_the_same_relative_paths(capsys, no_subprocess):
    lines = _dry_run(capsys, "--tpu-type", "v5p-16", "--zone", "us-east5-a", "--config", CONFIG,
                     "--name", "ship").splitlines()
    assert "/tmp/jaxtune/data/viggo" in lines[3]  # mkdir on every worker
    data_scp = shlex.split(lines[5])
    assert data_scp[5:8] == ["data/viggo/train.csv", "data/viggo/valid.csv",
                             "ship:/tmp/jaxtune/data/viggo/"]
    assert "cd /tmp/jaxtune &&" in lines[-1]  # so the relative paths resolve there


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tpu-type", "v5p-12"], "invalid TPU type 'v5p-12'"),
        (["--tpu-type", "v5p-16", "--name", "Bad_Name"], "invalid --name 'Bad_Name'"),
        (["--tpu-type", "v5p-16", "--zone", "useast"], "invalid --zone 'useast'"),
        (["--tpu-type", "v5p-16", "--config", "missing.yaml"], "missing.yaml does not exist"),
        (["--tpu-type", "v5p-16", "train.stepz=3"], "unknown key train.stepz"),
        (["--tpu-type", "v5p-16", "lr"], "override 'lr' must look like key=value"),
    ],
)
def test_bad_arguments_fail_with_one_line(capsys, no_subprocess, argv, message):
    base = {"--zone": "us-east5-a", "--config": CONFIG}
    for flag, value in base.items():
        if flag not in argv:
            argv = [*argv, flag, value]
    assert main(["launch", "tpu", *argv, "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


FAKE_GCLOUD = """\
#!{python}
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
if "describe" in argv:
    polls = os.environ["FAKE_GCLOUD_LOG"] + ".polls"
    n = int(open(polls).read()) if os.path.exists(polls) else 0
    open(polls, "w").write(str(n + 1))
    print("CREATING" if n == 0 else "READY")
fail = os.environ.get("FAKE_GCLOUD_FAIL")
sys.exit(3 if fail and fail in " ".join(argv) else 0)
"""

# A PEP 517 backend that writes a minimal valid wheel, so the build step runs offline and fast.
FAKE_BACKEND = """\
import base64, hashlib, zipfile
NAME, VERSION = "jaxtune", "{version}"
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    fn = f"{{NAME}}-{{VERSION}}-py3-none-any.whl"
    info = f"{{NAME}}-{{VERSION}}.dist-info"
    files = {{f"{{info}}/METADATA": f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n",
             f"{{info}}/WHEEL": "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}}
    record = []
    with zipfile.ZipFile(f"{{wheel_directory}}/{{fn}}", "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
            record.append(f"{{path}},sha256={{digest.decode()}},{{len(text)}}")
        record.append(f"{{info}}/RECORD,,")
        zf.writestr(f"{{info}}/RECORD", "\\n".join(record) + "\\n")
    return fn
"""


@pytest.fixture
def fake_cloud(tmp_path, monkeypatch):
    import importlib.metadata

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    source = tmp_path / "src"
    source.mkdir()
    (source / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = []
        build-backend = "fake_backend"
        backend-path = ["."]
        """))
    version = importlib.metadata.version("jaxtune")
    (source / "fake_backend.py").write_text(FAKE_BACKEND.format(version=version))
    log = tmp_path / "gcloud.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GCLOUD_LOG", str(log))
    return {"source": source, "dist": tmp_path / "dist", "log": log}


def _launch_args(fake_cloud) -> list[str]:
    return ["launch", "tpu", "--tpu-type", "v5p-16", "--zone", "us-east5-a", "--config", CONFIG,
            "train.steps=20", "--name", "run1", "--source", str(fake_cloud["source"]),
            "--dist-dir", str(fake_cloud["dist"]), "--delete", "--poll-seconds", "0",
            "--skip-plan"]


def _gcloud_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_run_executes_the_dry_run_commands_in_order(fake_cloud, capsys):
    args = _launch_args(fake_cloud)
    assert main([*args, "--dry-run"]) == 0
    planned = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert main(args) == 0
    calls = _gcloud_calls(fake_cloud["log"])
    planned_gcloud = [argv[1:] for argv in planned if argv[0] == "gcloud"]
    describe = planned_gcloud[1]
    # The state is polled until READY (CREATING first), every other command runs once.
    assert calls == [planned_gcloud[0], describe, describe, *planned_gcloud[2:]]
    assert planned[0][:4] == [sys.executable, "-m", "pip", "wheel"]
    assert (fake_cloud["dist"] / planned[4][5].split("/")[-1]).is_file()  # the scp'd wheel


def test_failed_training_still_deletes_the_tpu(fake_cloud, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_GCLOUD_FAIL", "jaxtune train")
    assert main(_launch_args(fake_cloud)) == 1
    assert "train on 2 host(s) (8 chips) failed (exit 3)" in capsys.readouterr().err
    calls = _gcloud_calls(fake_cloud["log"])
    assert calls[-1][:4] == ["compute", "tpus", "tpu-vm", "delete"]
    assert any("jaxtune train" in " ".join(c) for c in calls[:-1])


def test_reuse_skips_creation_but_still_waits(capsys, no_subprocess):
    out = _dry_run(capsys, "--tpu-type", "v5p-16", "--zone", "us-east5-a", "--config", CONFIG,
                   "--name", "kept", "--reuse")
    lines = out.splitlines()
    assert not any(" create " in line for line in lines)
    assert " describe kept " in lines[1] and " train " in lines[-1]
