"""`jaxtune launch gke`: golden manifests, schema validation, and the settings they carry."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.cli import main
from infra.launch.gke_manifest import GkeJobSpec, GpuNodes, render_manifests
from infra.launch.tpu_types import parse_tpu_type
from tests.infra.golden_files import assert_matches_golden
from tests.infra.k8s_schema import ManifestInvalid, validate_manifest

REPO = Path(__file__).resolve().parents[3]
CONFIG = "tests/infra/golden/run_config.yaml"
IMAGE = "us-docker.pkg.dev/my-project/jaxtune/jaxtune-train:0.1.0"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def _dry_run(capsys, *argv: str) -> str:
    # The fixture config's model is a hub id (no config.json offline): these tests are about the
    # manifests; the fit check has its own (test_launch_plan.py).
    assert main(["launch", "gke", *argv, "--image", IMAGE, "--dry-run", "--skip-plan"]) == 0
    return capsys.readouterr().out


def _pod_spec(jobset: dict) -> dict:
    return jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def test_tpu_jobset_golden_and_valid(capsys):
    text = _dry_run(capsys, "--accelerator", "tpu", "--tpu-type", "v5p-16", "--config", CONFIG,
                    "optimizer.learning_rate=3e-5", "--name", "viggo-tpu")
    assert_matches_golden("gke_tpu_v5p-16.yaml", text)
    config_map, jobset = yaml.safe_load_all(text)
    for obj in (config_map, jobset):
        validate_manifest(obj)
    job = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == job["completions"] == 2  # v5p-16: 8 chips on 2 hosts
    pod = _pod_spec(jobset)
    assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice",
                                   "cloud.google.com/gke-tpu-topology": "2x2x2"}
    assert pod["containers"][0]["resources"]["limits"] == {"google.com/tpu": 4}
    embedded = yaml.safe_load(config_map["data"]["run.yaml"])
    assert embedded["optimizer"]["learning_rate"] == 3e-5  # the override, as a float
    assert embedded["model"] == yaml.safe_load(Path(CONFIG).read_text())["model"]


def test_gpu_jobset_golden_and_valid(capsys):
    text = _dry_run(capsys, "--accelerator", "gpu", "--nodes", "2", "--gpus-per-node", "8",
                    "--gpu-type", "nvidia-h100-80gb", "--config", CONFIG, "--name", "viggo-gpu",
                    "--namespace", "ml")
    assert_matches_golden("gke_gpu_2x8.yaml", text)
    objs = list(yaml.safe_load_all(text))
    for obj in objs:
        validate_manifest(obj)
    jobset = objs[1]
    env = {e["name"]: e for e in _pod_spec(jobset)["containers"][0]["env"]}
    # Pod 0 of the only job, through the JobSet's headless service (subdomain = name).
    assert jobset["spec"]["network"] == {"enableDNSHostnames": True, "subdomain": "viggo-gpu"}
    assert env["JAX_COORDINATOR_ADDRESS"]["value"] == "viggo-gpu-workers-0-0.viggo-gpu:1234"
    assert env["JAX_NUM_PROCESSES"]["value"] == "2"
    assert env["JAX_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")


@pytest.mark.parametrize(("tpu_type", "topology"),
                         [("v4-8", None), ("v5litepod-16", None), ("v6e-256", None),
                          ("v5p-384", "4x4x12")])
def test_every_generation_renders_a_valid_jobset(tpu_type, topology):
    tpu = parse_tpu_type(tpu_type, topology)
    spec = GkeJobSpec(name="t", image=IMAGE, accelerator="tpu", run_config={"a": 1}, tpu=tpu)
    for obj in render_manifests(spec):
        validate_manifest(obj)
    jobset = render_manifests(spec)[1]
    assert jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["completions"] == tpu.hosts


def test_validation_rejects_broken_manifests():
    # The schema check is only worth something if it fails on real mistakes.
    spec = GkeJobSpec(name="t", image=IMAGE, accelerator="gpu", run_config={},
                      gpu=GpuNodes("nvidia-l4", 2, 1))
    _, jobset = render_manifests(spec)
    mistakes = [
        lambda j: j["spec"].update(replicatedJob=j["spec"].pop("replicatedJobs")),
        lambda j: j["spec"]["network"].update(enableDNSHostnames="yes"),
        lambda j: j.update(apiVersion="jobset.x-k8s.io/v1"),
        lambda j: _pod_spec(j)["containers"][0].update(imagePullPolicy=3),
        lambda j: _pod_spec(j)["containers"][0]["env"][2]["valueFrom"].update(fieldref={}),
        lambda j: j["spec"]["replicatedJobs"][0]["template"]["spec"].update(parallelism="2"),
        lambda j: _pod_spec(j)["containers"][0].pop("name"),
    ]
    for mistake in mistakes:
        broken = copy.deepcopy(jobset)
        mistake(broken)
        with pytest.raises(ManifestInvalid):
            validate_manifest(broken)


def test_out_file_and_apply_through_kubectl(tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append((argv, kwargs.get("input")))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    out = tmp_path / "jobset.yaml"
    assert main(["launch", "gke", "--accelerator", "gpu", "--config", CONFIG, "--image", IMAGE,
                 "--namespace", "ml", "--out", str(out)]) == 0
    assert calls == [(["kubectl", "apply", "-f", "-", "--namespace", "ml"], out.read_text())]
    assert [o["kind"] for o in yaml.safe_load_all(out.read_text())] == ["ConfigMap", "JobSet"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--accelerator", "tpu"], "needs --tpu-type"),
        (["--accelerator", "tpu", "--tpu-type", "v5p-16", "--nodes", "2"],
         "apply to --accelerator gpu"),
        (["--accelerator", "gpu", "--tpu-type", "v5p-16"], "apply to --accelerator tpu"),
        (["--accelerator", "gpu", "--nodes", "0"], "must be >= 1"),
        (["--accelerator", "tpu", "--tpu-type", "v5p-24"], "invalid TPU type"),
        (["--accelerator", "gpu", "--name", "x" * 41], "at most 40 characters"),
        (["--accelerator", "gpu", "train.=1"], "must look like key=value"),
        (["--accelerator", "gpu", "mesh.fsdp=0"], "mesh sizes must be >= 1"),
    ],
)
def test_bad_arguments_fail_with_one_line(capsys, argv, message):
    assert main(["launch", "gke", *argv, "--config", CONFIG, "--image", IMAGE,
                 "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
