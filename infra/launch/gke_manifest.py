"""GKE manifests for a multi-host training run: a ConfigMap holding the resolved run config and
a JobSet (jobset.x-k8s.io/v1alpha2) with one pod per host.

* TPU: the pods land on one TPU slice (node selectors ``gke-tpu-accelerator`` and
  ``gke-tpu-topology``, ``google.com/tpu`` = chips per host). GKE's TPU webhook gives every
  pod ``TPU_WORKER_HOSTNAMES``/``TPU_WORKER_ID``, from which `jax.distributed` configures
  itself (see `train_jax.distributed`).
* GPU: ``nvidia.com/gpu`` per pod; `jax.distributed` gets ``JAX_COORDINATOR_ADDRESS`` (pod 0
  through the JobSet's headless-service DNS name), ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID`` (the pod's completion index).

The JobSet creates the headless service itself (``spec.network.enableDNSHostnames``); pods are
reachable as ``<jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import yaml

from infra.launch.tpu_types import TpuSlice, launch_facts
from train_jax.distributed import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID

JOBSET_API_VERSION = "jobset.x-k8s.io/v1alpha2"
REPLICATED_JOB = "workers"
CONFIG_MOUNT_DIR = "/etc/jaxtune"
CONFIG_FILE = "run.yaml"
COORDINATOR_PORT = 1234
COMPLETION_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


@dataclass(frozen=True)
class GpuNodes:
    """A GPU node shape: how many nodes (= JAX processes) with how many GPUs each."""

    gke_accelerator: str  # node label cloud.google.com/gke-accelerator, e.g. nvidia-h100-80gb
    nodes: int
    gpus_per_node: int


@dataclass(frozen=True)
class GkeJobSpec:
    """What the manifests are rendered from."""

    name: str
    image: str
    accelerator: Literal["tpu", "gpu"]
    run_config: dict[str, Any]  # resolved run config (file + overrides)
    tpu: TpuSlice | None = None
    gpu: GpuNodes | None = None
    namespace: str | None = None
    max_restarts: int = 0
    service_account: str | None = None

    @property
    def hosts(self) -> int:
        """Pods in the job: one per TPU host or GPU node."""
        if self.accelerator == "tpu":
            assert self.tpu is not None
            return self.tpu.hosts
        assert self.gpu is not None
        return self.gpu.nodes


def _metadata(spec: GkeJobSpec, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "jaxtune",
                                                     "app.kubernetes.io/instance": spec.name}}
    if spec.namespace:
        meta["namespace"] = spec.namespace
    return meta


def render_config_map(spec: GkeJobSpec) -> dict[str, Any]:
    """The resolved run config as a ConfigMap, mounted read-only into every pod."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, f"{spec.name}-config"),
        "data": {CONFIG_FILE: yaml.safe_dump(spec.run_config, sort_keys=False)},
    }


def _container(spec: GkeJobSpec) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "train",
        "image": spec.image,
        "command": ["jaxtune", "train", "--config", f"{CONFIG_MOUNT_DIR}/{CONFIG_FILE}"],
        "volumeMounts": [{"name": "run-config", "mountPath": CONFIG_MOUNT_DIR,
                          "readOnly": True}],
    }
    if spec.accelerator == "tpu":
        assert spec.tpu is not None
        chips = spec.tpu.chips_per_host
        # 8471: TPU runtime (libtpu) between hosts; 8482: jax.distributed coordinator on TPU.
        container["ports"] = [{"containerPort": 8471}, {"containerPort": 8482}]
        container["resources"] = {"requests": {"google.com/tpu": chips},
                                  "limits": {"google.com/tpu": chips}}
        return container
    assert spec.gpu is not None
    gpus = spec.gpu.gpus_per_node
    coordinator_host = f"{spec.name}-{REPLICATED_JOB}-0-0.{spec.name}"
    container["ports"] = [{"containerPort": COORDINATOR_PORT}]
    container["env"] = [
        {"name": ENV_COORDINATOR, "value": f"{coordinator_host}:{COORDINATOR_PORT}"},
        {"name": ENV_NUM_PROCESSES, "value": str(spec.gpu.nodes)},
        {"name": ENV_PROCESS_ID,
         "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX_FIELD}}},
    ]
    container["resources"] = {"requests": {"nvidia.com/gpu": gpus},
                              "limits": {"nvidia.com/gpu": gpus}}
    return container


def _pod_spec(spec: GkeJobSpec) -> dict[str, Any]:
    if spec.accelerator == "tpu":
        assert spec.tpu is not None
        selector = {"cloud.google.com/gke-tpu-accelerator": launch_facts(spec.tpu).gke_accelerator,
                    "cloud.google.com/gke-tpu-topology": spec.tpu.topology}
    else:
        assert spec.gpu is not None
        selector = {"cloud.google.com/gke-accelerator": spec.gpu.gke_accelerator}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": selector,
        "containers": [_container(spec)],
        "volumes": [{"name": "run-config", "configMap": {"name": f"{spec.name}-config"}}],
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    return pod


def render_jobset(spec: GkeJobSpec) -> dict[str, Any]:
    """The JobSet: one replicated Job whose `hosts` indexed pods run `jaxtune train` together."""
    metadata = _metadata(spec, spec.name)
    if spec.accelerator == "tpu":
        # One slice per node pool: JobSet places the whole job on a single TPU slice.
        metadata["annotations"] = {
            "alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"}
    hosts = spec.hosts
    return {
        "apiVersion": JOBSET_API_VERSION,
        "kind": "JobSet",
        "metadata": metadata,
        "spec": {
            "failurePolicy": {"maxRestarts": spec.max_restarts},
            "network": {"enableDNSHostnames": True, "subdomain": spec.name},
            "replicatedJobs": [{
                "name": REPLICATED_JOB,
                "replicas": 1,
                "template": {"spec": {
                    "parallelism": hosts,
                    "completions": hosts,
                    "completionMode": "Indexed",
                    # Any pod failure fails the Job; JobSet then restarts all pods together
                    # (up to maxRestarts), since a multi-host step cannot lose a member.
                    "backoffLimit": 0,
                    "template": {"spec": _pod_spec(spec)},
                }},
            }],
        },
    }


def render_manifests(spec: GkeJobSpec) -> list[dict[str, Any]]:
    """All objects to apply, in order (the ConfigMap before the pods that mount it)."""
    return [render_config_map(spec), render_jobset(spec)]


class _ManifestDumper(yaml.SafeDumper):
    """Writes multi-line strings (the embedded run config) as readable literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML as `kubectl apply -f -` reads it."""
    return yaml.dump_all(objects, Dumper=_ManifestDumper, sort_keys=False)
