"""`jaxtune launch gke-serve`: schema-valid Deployment + Service, the settings they carry, a
server command `jaxtune serve` parses, and one-line refusals of bad input."""

from __future__ import annotations

import argparse
import copy
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

import serve.cli as serve_cli
from infra.cli import main
from infra.launch.gke_serve_manifest import ServeDeploymentSpec, render_manifests
from tests.infra.k8s_schema import ManifestInvalid, validate_manifest
from tests.infra.launch.test_launch_docs import doc_commands

REPO = Path(__file__).resolve().parents[3]
IMAGE = "us-docker.pkg.dev/my-project/jaxtune/jaxtune-serve:0.1.0"
MODEL = "gs://my-bucket/runs/viggo/export"


def _dry_run(capsys, *argv: str) -> tuple[dict, dict]:
    code = main(["launch", "gke-serve", "--image", IMAGE, "--dry-run", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    deployment, service = yaml.safe_load_all(captured.out)
    validate_manifest(deployment)
    validate_manifest(service)
    return deployment, service


def _pod(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def _served_args(container: dict) -> argparse.Namespace:
    """The server container's command as `jaxtune serve` itself parses it."""
    assert container["command"][:2] == ["jaxtune", "serve"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    serve_cli.add_arguments(parser)
    return parser.parse_args(container["command"][2:])


def test_default_deployment_and_service(capsys):
    deployment, service = _dry_run(capsys, "--model", MODEL + "/", "--name", "viggo",
                                   "--api-key-secret", "viggo-api", "--",
                                   "--max-model-len", "4096", "--dtype", "bfloat16")
    pod = _pod(deployment)
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    (fetch,) = pod["initContainers"]
    assert fetch["command"] == ["gcloud", "storage", "rsync", "--recursive", MODEL, "/model"]
    (server,) = pod["containers"]
    assert server["image"] == IMAGE
    assert server["resources"] == {"requests": {"nvidia.com/gpu": 1},
                                   "limits": {"nvidia.com/gpu": 1}}
    assert server["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # The engine loads before anything answers: 30 minutes of startup probes at 10 s.
    assert server["startupProbe"]["httpGet"]["path"] == "/health"
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"][
        "periodSeconds"] == 30 * 60
    assert server["env"] == [{"name": "JAXTUNE_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": "viggo-api", "key": "api-key"}}}]
    # The fetched folder is what the server serves, read-only.
    assert {m["name"]: m["mountPath"] for m in fetch["volumeMounts"]} == {"model": "/model"}
    assert server["volumeMounts"] == [{"name": "model", "mountPath": "/model", "readOnly": True}]
    assert pod["volumes"] == [{"name": "model", "emptyDir": {}}]
    args = _served_args(server)
    assert (args.model, args.name, args.host, args.port) == (Path("/model"), "viggo",
                                                             "0.0.0.0", 8000)
    assert (args.max_model_len, args.dtype, args.api_key) == (4096, "bfloat16", None)
    # The Service reaches exactly these pods on the server's port.
    assert service["spec"]["type"] == "ClusterIP"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http",
                                         "protocol": "TCP"}]
    assert server["ports"][0] == {"name": "http", "containerPort": 8000, "protocol": "TCP"}


def test_options_reach_the_manifests(capsys):
    deployment, service = _dry_run(
        capsys, "--model", MODEL, "--name", "viggo-h100", "--served-name", "viggo-tuned",
        "--namespace", "ml", "--gpu-type", "nvidia-h100-80gb", "--replicas", "3",
        "--service-type", "LoadBalancer", "--service-account", "serve-sa",
        "--gcloud-image", "gcr.io/google.com/cloudsdktool/google-cloud-cli:520.0.0-stable",
        "--model-disk-gib", "40", "--startup-timeout", "10", "--", "--drain-timeout", "90")
    pod = _pod(deployment)
    assert deployment["metadata"]["namespace"] == service["metadata"]["namespace"] == "ml"
    assert deployment["spec"]["replicas"] == 3
    assert service["spec"]["type"] == "LoadBalancer"
    assert pod["serviceAccountName"] == "serve-sa"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["initContainers"][0]["image"].endswith(":520.0.0-stable")
    assert pod["volumes"] == [{"name": "model", "emptyDir": {"sizeLimit": "40Gi"}}]
    assert pod["containers"][0]["startupProbe"]["failureThreshold"] == 60
    assert "env" not in pod["containers"][0]  # no secret: the server runs without auth
    # Kubernetes waits out the server's drain (90 s) plus the engine's stop.
    assert pod["terminationGracePeriodSeconds"] == 120
    args = _served_args(pod["containers"][0])
    assert (args.name, args.drain_timeout_s) == ("viggo-tuned", 90.0)


def test_one_shard_on_two_gpus_renders_without_the_flag(capsys):
    # One GPU idles (a warning says so); vLLM's default of 1 needs no flag.
    deployment, _ = _dry_run(capsys, "--model", MODEL, "--gpus", "2",
                             "--tensor-parallel-size", "1")
    server = _pod(deployment)["containers"][0]
    assert server["resources"]["limits"] == {"nvidia.com/gpu": 2}
    assert "--tensor-parallel-size" not in server["command"]


def test_tensor_parallel_goes_to_serve(capsys):
    deployment, _ = _dry_run(capsys, "--model", MODEL, "--gpus", "4",
                             "--gpu-type", "nvidia-l4")
    pod = _pod(deployment)
    server = pod["containers"][0]
    assert server["resources"]["limits"] == {"nvidia.com/gpu": 4}
    assert _served_args(server).tensor_parallel_size == 4  # default: every GPU of the pod
    # vLLM's tensor-parallel workers share memory through /dev/shm.
    assert {"name": "shm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert {"name": "shm", "mountPath": "/dev/shm"} in server["volumeMounts"]
    assert main(["launch", "gke-serve", "--model", MODEL, "--image", IMAGE, "--gpus", "4",
                 "--tensor-parallel-size", "8", "--dry-run"]) == 1
    assert "--tensor-parallel-size 8 exceeds --gpus 4" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "/data/viggo-tuned"], "--model must be a gs://BUCKET/PATH folder"),
        (["--model", "s3://bucket/viggo"], "--model must be a gs://BUCKET/PATH folder"),
        (["--model", "gs://My_Bucket/viggo"], "--model must be a gs://BUCKET/PATH folder"),
        (["--model", "gs://bucket/runs/*"], "--model must be a gs://BUCKET/PATH folder"),
        (["--gpus", "0"], "--gpus must be >= 1, got 0"),
        (["--gpus", "-2"], "--gpus must be >= 1, got -2"),
        (["--gpus", "2", "--tensor-parallel-size", "4"],
         "--tensor-parallel-size 4 exceeds --gpus 2"),
        (["--tensor-parallel-size", "0"], "--tensor-parallel-size must be >= 1"),
        (["--name", "Viggo"], "invalid --name 'Viggo'"),
        (["--name", "v" * 64], "at most 63 characters"),
        (["--name=-viggo"], "invalid --name '-viggo'"),
        (["--gpu-type", "NVIDIA L4"], "invalid --gpu-type"),
        (["--api-key-secret", "Key_Secret"], "invalid --api-key-secret"),
        (["--api-key-secret", "s", "--api-key-secret-key", "a/b"], "invalid --api-key-secret-key"),
        (["--replicas", "0"], "--replicas must be >= 1"),
        (["--model-disk-gib", "0"], "--model-disk-gib must be >= 1"),
        (["--startup-timeout", "0"], "--startup-timeout must be in (0, 1440]"),
        (["--served-name", "my model"], "invalid model name 'my model'"),
        (["--", "--port", "9000"], "--port is set by jaxtune launch gke-serve"),
        (["--", "--api-key=sk-123"], "use --api-key-secret"),
        (["--", "--lora", "a=/x"], "--lora is set by jaxtune launch gke-serve"),
        (["--", "--memory-fraction", "2"], "memory_fraction must be in (0, 1], got 2.0"),
        (["--", "--dtype", "int4"], "argument --dtype: invalid choice: 'int4'"),
        (["--", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_input_fails_with_one_line(capsys, argv, message):
    full = ["--model", MODEL, *argv] if "--model" not in argv else argv
    assert main(["launch", "gke-serve", "--image", IMAGE, "--dry-run", *full]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1 and err.startswith("jaxtune: error: ")


def test_schema_check_rejects_broken_manifests():
    # The schema check is only worth something if it fails on real mistakes.
    spec = ServeDeploymentSpec(name="t", image=IMAGE, model_uri=MODEL, served_name="t",
                               gke_accelerator="nvidia-l4", gpus=1)
    deployment, service = render_manifests(spec)

    def server(d):
        return d["spec"]["template"]["spec"]["containers"][0]

    mistakes = [
        (deployment, lambda d: server(d).update(readynessProbe=server(d).pop("readinessProbe"))),
        (deployment, lambda d: d["spec"].update(replicas="1")),
        (deployment, lambda d: d["spec"]["template"]["spec"]["initContainers"][0].pop("name")),
        (deployment, lambda d: server(d)["startupProbe"]["httpGet"].update(path=3)),
        (deployment, lambda d: d["spec"]["template"]["spec"]["volumes"][0].update(
            emptyDir={"medium": "Memory", "size": "1Gi"})),
        (service, lambda s: s["spec"]["ports"][0].update(port="8000")),
        (service, lambda s: s["spec"].update(selectors=s["spec"].pop("selector"))),
    ]
    for obj, mistake in mistakes:
        broken = copy.deepcopy(obj)
        mistake(broken)
        with pytest.raises(ManifestInvalid):
            validate_manifest(broken)


def test_out_file_and_apply_through_kubectl(tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append((argv, kwargs.get("input")))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    out = tmp_path / "serve.yaml"
    assert main(["launch", "gke-serve", "--model", MODEL, "--image", IMAGE, "--namespace", "ml",
                 "--out", str(out)]) == 0
    assert calls == [(["kubectl", "apply", "-f", "-", "--namespace", "ml"], out.read_text())]
    assert [o["kind"] for o in yaml.safe_load_all(out.read_text())] == ["Deployment", "Service"]
    monkeypatch.setattr(subprocess, "run",
                        lambda argv, **kw: subprocess.CompletedProcess(argv, 1))
    assert main(["launch", "gke-serve", "--model", MODEL, "--image", IMAGE]) == 1


def _doc_commands() -> list[str]:
    """`jaxtune launch gke-serve` commands of docs/LAUNCH.md's "Serving on GKE" section."""
    return doc_commands("jaxtune launch gke-serve", fences="sh|bash", section="Serving on GKE")


def test_doc_commands_dry_run(capsys, monkeypatch):
    commands = _doc_commands()
    assert len(commands) >= 2
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    for command in commands:
        command = command.replace("$REGISTRY", "us-docker.pkg.dev/p/jaxtune")
        argv = shlex.split(command.replace("MY_BUCKET", "my-bucket"))[1:]
        if "--dry-run" not in argv:
            argv.insert(2, "--dry-run")  # before any `--` and the serve flags after it
        assert main(argv) == 0, capsys.readouterr().err
        for obj in yaml.safe_load_all(capsys.readouterr().out):
            validate_manifest(obj)
