"""GKE manifests for serving a tuned model with `jaxtune serve` on GPU nodes: a Deployment and
the Service in front of it.

* The model folder (the output of `jaxtune export`, copied to Cloud Storage) is fetched by an
  init container, ``gcloud storage rsync --recursive gs://... /model``, into an ``emptyDir`` the
  server then mounts read-only. Why not the Cloud Storage FUSE CSI driver: it needs the GKE
  add-on enabled (off by default on Standard clusters) plus a sidecar injected by annotation,
  and vLLM reading safetensors through FUSE is slow unless a file cache is configured too. A
  local copy works on any GKE cluster whose pods may read the bucket (Workload Identity, the
  same service account as training) and loads at local-disk speed; the price is one download
  per pod start and node ephemeral storage the size of the model.
* ``nvidia.com/gpu`` per pod on nodes labelled ``cloud.google.com/gke-accelerator``; GKE adds
  the GPU taint's toleration to pods that request GPUs. With tensor parallelism vLLM's workers
  talk through shared memory, so ``/dev/shm`` is a memory-backed ``emptyDir`` (vLLM's own
  Kubernetes guide does the same).
* Probes: `jaxtune serve` loads the engine in its lifespan, so nothing answers until the model
  is loaded (minutes for a big model). A startup probe on ``/health`` allows for that; after it,
  liveness on ``/health`` (the process answers) and readiness on ``/ready`` (503 while draining
  for shutdown, so the pod leaves the Service before it stops).
* The API key, if any, comes from a Secret as ``JAXTUNE_API_KEY``, never from the manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from serve.settings import API_KEY_ENV

MODEL_DIR = "/model"
SERVE_PORT = 8000
GCLOUD_IMAGE = "gcr.io/google.com/cloudsdktool/google-cloud-cli:stable"
PROBE_PERIOD_S = 10
# After SIGTERM `jaxtune serve` drains for its drain timeout, then stops vLLM: allow for both.
ENGINE_STOP_MARGIN_S = 30
ServiceType = Literal["ClusterIP", "LoadBalancer"]


@dataclass(frozen=True)
class SecretKeyRef:
    """One key of a Kubernetes Secret (created beforehand with kubectl)."""

    name: str
    key: str


@dataclass(frozen=True)
class ServeDeploymentSpec:
    """What the manifests are rendered from (validated by `infra.launch.gke_serve_cli`).

    `serve_args` are the `jaxtune serve` flags after ``--model/--name/--host/--port``, tensor
    parallelism included: which flags `jaxtune serve` accepts is the CLI's concern, not this
    module's; `tensor_parallel_size` here only sizes the pod (shared memory).
    """

    name: str
    image: str
    model_uri: str  # gs://BUCKET/PATH of an HF model folder
    served_name: str
    gke_accelerator: str  # node label cloud.google.com/gke-accelerator, e.g. nvidia-l4
    gpus: int
    tensor_parallel_size: int = 1
    serve_args: tuple[str, ...] = ()
    replicas: int = 1
    service_type: ServiceType = "ClusterIP"
    api_key_secret: SecretKeyRef | None = None
    namespace: str | None = None
    service_account: str | None = None
    gcloud_image: str = GCLOUD_IMAGE
    model_disk_gib: int | None = None  # emptyDir size limit for the model copy
    startup_timeout_s: int = 1800
    drain_timeout_s: float = 30.0


def _labels(spec: ServeDeploymentSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "jaxtune", "app.kubernetes.io/instance": spec.name,
            "app.kubernetes.io/component": "serve"}


def _selector(spec: ServeDeploymentSpec) -> dict[str, str]:
    return {"app.kubernetes.io/instance": spec.name, "app.kubernetes.io/component": "serve"}


def _metadata(spec: ServeDeploymentSpec) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": spec.name, "labels": _labels(spec)}
    if spec.namespace:
        meta["namespace"] = spec.namespace
    return meta


def serve_command(spec: ServeDeploymentSpec) -> list[str]:
    """The server's command line: `jaxtune serve` on the fetched folder, on all interfaces."""
    return ["jaxtune", "serve", "--model", MODEL_DIR, "--name", spec.served_name,
            "--host", "0.0.0.0", "--port", str(SERVE_PORT), *spec.serve_args]


def _fetch_container(spec: ServeDeploymentSpec) -> dict[str, Any]:
    # rsync (not cp -r) puts the folder's contents, not the folder, into /model.
    return {
        "name": "fetch-model",
        "image": spec.gcloud_image,
        "command": ["gcloud", "storage", "rsync", "--recursive", spec.model_uri, MODEL_DIR],
        "volumeMounts": [{"name": "model", "mountPath": MODEL_DIR}],
    }


def _probe(path: str, failures: int, period_s: int = PROBE_PERIOD_S) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period_s,
            "timeoutSeconds": 5, "failureThreshold": failures}


def _serve_container(spec: ServeDeploymentSpec) -> dict[str, Any]:
    mounts = [{"name": "model", "mountPath": MODEL_DIR, "readOnly": True}]
    if spec.tensor_parallel_size > 1:
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    container: dict[str, Any] = {
        "name": "serve",
        "image": spec.image,
        "command": serve_command(spec),
        "ports": [{"name": "http", "containerPort": SERVE_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"nvidia.com/gpu": spec.gpus},
                      "limits": {"nvidia.com/gpu": spec.gpus}},
        "volumeMounts": mounts,
        "startupProbe": _probe("/health", math.ceil(spec.startup_timeout_s / PROBE_PERIOD_S)),
        "livenessProbe": _probe("/health", 3),
        "readinessProbe": _probe("/ready", 2, period_s=5),
    }
    if spec.api_key_secret is not None:
        ref = spec.api_key_secret
        container["env"] = [{"name": API_KEY_ENV, "valueFrom": {
            "secretKeyRef": {"name": ref.name, "key": ref.key}}}]
    return container


def _volumes(spec: ServeDeploymentSpec) -> list[dict[str, Any]]:
    model: dict[str, Any] = {}
    if spec.model_disk_gib is not None:
        model["sizeLimit"] = f"{spec.model_disk_gib}Gi"
    volumes = [{"name": "model", "emptyDir": model}]
    if spec.tensor_parallel_size > 1:
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory"}})
    return volumes


def render_deployment(spec: ServeDeploymentSpec) -> dict[str, Any]:
    """The Deployment: `replicas` pods, each fetching the model, then serving it on its GPUs."""
    pod: dict[str, Any] = {
        "nodeSelector": {"cloud.google.com/gke-accelerator": spec.gke_accelerator},
        "terminationGracePeriodSeconds": math.ceil(spec.drain_timeout_s) + ENGINE_STOP_MARGIN_S,
        "initContainers": [_fetch_container(spec)],
        "containers": [_serve_container(spec)],
        "volumes": _volumes(spec),
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": _selector(spec)},
            "template": {"metadata": {"labels": _labels(spec)}, "spec": pod},
        },
    }


def render_service(spec: ServeDeploymentSpec) -> dict[str, Any]:
    """The Service in front of the ready pods (ClusterIP, or LoadBalancer for an external IP)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec),
        "spec": {
            "type": spec.service_type,
            "selector": _selector(spec),
            "ports": [{"name": "http", "port": SERVE_PORT, "targetPort": "http",
                       "protocol": "TCP"}],
        },
    }


def render_manifests(spec: ServeDeploymentSpec) -> list[dict[str, Any]]:
    """All objects to apply, in order."""
    return [render_deployment(spec), render_service(spec)]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML as `kubectl apply -f -` reads it."""
    # Not `gke_manifest.to_yaml`: that module belongs to the training launcher (and imports the
    # training package); these manifests have no multi-line strings to lay out.
    return yaml.safe_dump_all(objects, sort_keys=False)
