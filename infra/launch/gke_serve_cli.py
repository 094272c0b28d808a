"""`jaxtune launch gke-serve`: render (and apply) a Deployment + Service serving a tuned model
with `jaxtune serve` on GKE GPU nodes.

``--dry-run`` prints the manifests; ``--out FILE`` writes them; otherwise they go to
``kubectl apply -f -``. Further `jaxtune serve` flags follow ``--``; they are checked here by
`jaxtune serve`'s own parser and settings, so a bad value fails now rather than in a pod.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import serve.cli as serve_cli
from infra.launch.gke_serve_manifest import (
    GCLOUD_IMAGE,
    MODEL_DIR,
    SERVE_PORT,
    SecretKeyRef,
    ServeDeploymentSpec,
    ServiceType,
    render_manifests,
    to_yaml,
)
from infra.launch.kubectl import kubectl_apply
from serve.settings import ModelSource, ServeConfigError
from serve.settings_flags import flag_values

logger = logging.getLogger(__name__)

# Deployment, Service and label value: a DNS-1035 label.
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# A Secret's name is a DNS subdomain; its keys are [-._a-zA-Z0-9]+.
_SECRET_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9]([-a-z0-9._]{0,61}[a-z0-9])?$")
# gs://BUCKET[/PATH]: bucket names are 3-222 of [a-z0-9._-]; rsync needs a folder, no wildcard.
_GS_RE = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^*?\[\]#\s]*)?$")
# The field `jaxtune serve` generates --tensor-parallel-size from (serve.settings_flags).
TENSOR_PARALLEL_FIELD = "tensor_parallel_size"
# `jaxtune serve` flags the launcher sets itself, and what to use instead.
_RESERVED = {
    "--model": "--model gs://... of gke-serve",
    "--name": "--served-name",
    "--host": "nothing (the server listens on 0.0.0.0 in the pod)",
    "--port": f"nothing (the pod's port is {SERVE_PORT})",
    "--api-key": "--api-key-secret (a key in a manifest is readable by anyone who reads it)",
    "--extra-model": "one gke-serve Deployment per model",
    "--lora": "a merged export (jaxtune export) in --model",
    "--tensor-parallel-size": "--tensor-parallel-size before --",
}


class GkeServeLaunchError(ValueError):
    """A `jaxtune launch gke-serve` argument is invalid or kubectl failed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `jaxtune launch gke-serve` options."""
    parser.add_argument("--model", required=True, metavar="gs://BUCKET/PATH",
                        help="HF model folder in Cloud Storage (e.g. jaxtune export's output)")
    parser.add_argument("--image", required=True,
                        help="serving image (infra/docker/Dockerfile.serve) in your registry, "
                             "with its tag")
    parser.add_argument("--name", default="jaxtune-serve",
                        help="Deployment and Service name (DNS label, at most 63 characters)")
    parser.add_argument("--served-name",
                        help="model name clients put in 'model' (default: --name)")
    parser.add_argument("--namespace", help="Kubernetes namespace (default: kubectl's current)")
    parser.add_argument("--gpu-type", default="nvidia-l4",
                        help="node label cloud.google.com/gke-accelerator (default: %(default)s)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per pod (default: 1)")
    parser.add_argument("--tensor-parallel-size", type=int,
                        help="GPUs vLLM shards the model over (default: --gpus)")
    parser.add_argument("--replicas", type=int, default=1, help="pods (default: 1)")
    parser.add_argument("--service-type", default="ClusterIP", choices=get_args(ServiceType),
                        help="LoadBalancer gives an external IP (default: %(default)s)")
    parser.add_argument("--api-key-secret", metavar="SECRET",
                        help="Secret holding the API key (as $JAXTUNE_API_KEY of the server)")
    parser.add_argument("--api-key-secret-key", default="api-key", metavar="KEY",
                        help="key in --api-key-secret (default: %(default)s)")
    parser.add_argument("--service-account", help="Kubernetes service account that may read "
                                                  "the gs:// folder (Workload Identity)")
    parser.add_argument("--gcloud-image", default=GCLOUD_IMAGE,
                        help="image of the init container that fetches the model "
                             "(default: %(default)s)")
    parser.add_argument("--model-disk-gib", type=int,
                        help="size limit of the pod's copy of the model (default: none)")
    parser.add_argument("--startup-timeout", type=float, default=30.0, metavar="MINUTES",
                        help="time the server may take to load the model (default: %(default)g)")
    parser.add_argument("--out", help="write the manifests to this file")
    parser.add_argument("--dry-run", action="store_true", help="print the manifests; apply "
                                                                "nothing")
    parser.add_argument("serve_args", nargs="*", metavar="-- SERVE_FLAG",
                        help="further jaxtune serve flags, after --, e.g. -- --max-model-len 4096")


@dataclass(frozen=True)
class CheckedServeArgs:
    """`jaxtune serve` flags as checked by its own parser and settings."""

    args: tuple[str, ...]
    drain_timeout_s: float


class _RaisingParser(argparse.ArgumentParser):
    """An argparse parser that raises instead of printing usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise GkeServeLaunchError(f"jaxtune serve arguments after --: {message}")


def tensor_parallel_flag() -> str:
    """The `jaxtune serve` flag generated from `ServeSettings.tensor_parallel_size`."""
    for flag in serve_cli.settings_flags():
        if flag.field == TENSOR_PARALLEL_FIELD:
            return flag.name
    raise RuntimeError(f"jaxtune serve has no flag for ServeSettings.{TENSOR_PARALLEL_FIELD}")


def refuse_reserved(user_args: list[str]) -> None:
    """Refuse the `jaxtune serve` flags (given after --) that the launcher sets itself."""
    for token in user_args:
        flag = token.split("=", 1)[0]
        if flag in _RESERVED:
            raise GkeServeLaunchError(f"{flag} is set by jaxtune launch gke-serve; use "
                                      f"{_RESERVED[flag]}")


def check_serve_args(served_name: str, extra: list[str]) -> CheckedServeArgs:
    """Parse `extra` as `jaxtune serve` would in the pod and build its settings (which
    validates every value), without the model folder, which exists only in the pod."""
    parser = _RaisingParser(prog="jaxtune serve", add_help=False, allow_abbrev=False)
    serve_cli.add_arguments(parser)
    parsed = parser.parse_args(["--model", MODEL_DIR, "--name", served_name, *extra])
    values: dict[str, Any] = flag_values(parsed, serve_cli.settings_flags())
    values.update(host="0.0.0.0", port=SERVE_PORT)
    try:
        # The class `serve.cli` generates its flags from (looked up there, not imported here,
        # so that the two cannot differ).
        settings = serve_cli.ServeSettings(models=(ModelSource(served_name, Path(MODEL_DIR)),),
                                           **values)
    except ServeConfigError as exc:
        raise GkeServeLaunchError(f"jaxtune serve would refuse this: {exc}") from None
    return CheckedServeArgs(tuple(extra), settings.drain_timeout_s)


def _check_names(args: argparse.Namespace) -> None:
    if not _NAME_RE.match(args.name):
        raise GkeServeLaunchError(f"invalid --name {args.name!r}: lowercase letters, digits and "
                                  "'-', starting with a letter, at most 63 characters")
    if not _LABEL_VALUE_RE.match(args.gpu_type):
        raise GkeServeLaunchError(f"invalid --gpu-type {args.gpu_type!r}: a GKE accelerator "
                                  "label such as nvidia-l4 or nvidia-h100-80gb")
    if args.api_key_secret is not None and not _SECRET_RE.match(args.api_key_secret):
        raise GkeServeLaunchError(f"invalid --api-key-secret {args.api_key_secret!r}: a Secret "
                                  "name (lowercase letters, digits, '-' and '.')")
    if not _SECRET_KEY_RE.match(args.api_key_secret_key):
        raise GkeServeLaunchError(f"invalid --api-key-secret-key {args.api_key_secret_key!r}: "
                                  "letters, digits, '-', '_' and '.'")
    for flag, image in (("--image", args.image), ("--gcloud-image", args.gcloud_image)):
        if not image or any(c.isspace() for c in image):
            raise GkeServeLaunchError(f"invalid {flag} {image!r}: an image reference such as "
                                      "us-docker.pkg.dev/PROJECT/REPO/jaxtune-serve:TAG")


def _tensor_parallel(args: argparse.Namespace) -> int:
    """The tensor parallel size, checked against the GPUs and what `jaxtune serve` accepts."""
    if args.gpus < 1:
        raise GkeServeLaunchError(f"--gpus must be >= 1, got {args.gpus}")
    size = args.gpus if args.tensor_parallel_size is None else args.tensor_parallel_size
    if size < 1:
        raise GkeServeLaunchError(f"--tensor-parallel-size must be >= 1, got {size}")
    if size > args.gpus:
        raise GkeServeLaunchError(f"--tensor-parallel-size {size} exceeds --gpus {args.gpus}: "
                                  "vLLM puts one shard on each GPU of the pod")
    if size < args.gpus:
        logger.warning("%d of the pod's %d GPUs stay idle: vLLM uses --tensor-parallel-size %d",
                       args.gpus - size, args.gpus, size)
    return size


def spec_from_args(args: argparse.Namespace) -> ServeDeploymentSpec:
    """Validate the command line into a `ServeDeploymentSpec`."""
    _check_names(args)
    model_uri = args.model.rstrip("/")
    if not _GS_RE.match(model_uri):
        raise GkeServeLaunchError(f"--model must be a gs://BUCKET/PATH folder (e.g. jaxtune "
                                  f"export's output copied to Cloud Storage), got {args.model!r}")
    tp = _tensor_parallel(args)
    if args.replicas < 1:
        raise GkeServeLaunchError(f"--replicas must be >= 1, got {args.replicas}")
    if args.model_disk_gib is not None and args.model_disk_gib < 1:
        raise GkeServeLaunchError(f"--model-disk-gib must be >= 1, got {args.model_disk_gib}")
    if not 0 < args.startup_timeout <= 24 * 60:
        raise GkeServeLaunchError(f"--startup-timeout must be in (0, 1440] minutes, got "
                                  f"{args.startup_timeout:g}")
    served_name = args.served_name or args.name
    refuse_reserved(args.serve_args)
    extra = list(args.serve_args)
    if tp > 1:
        extra += [tensor_parallel_flag(), str(tp)]
    checked = check_serve_args(served_name, extra)
    if args.service_type == "LoadBalancer" and args.api_key_secret is None:
        logger.warning("a LoadBalancer gives the server an external IP and there is no "
                       "--api-key-secret: anyone who finds the IP can use the model")
    secret = (SecretKeyRef(args.api_key_secret, args.api_key_secret_key)
              if args.api_key_secret else None)
    return ServeDeploymentSpec(
        name=args.name, image=args.image, model_uri=model_uri, served_name=served_name,
        gke_accelerator=args.gpu_type, gpus=args.gpus, tensor_parallel_size=tp,
        serve_args=checked.args, replicas=args.replicas, service_type=args.service_type,
        api_key_secret=secret, namespace=args.namespace, service_account=args.service_account,
        gcloud_image=args.gcloud_image, model_disk_gib=args.model_disk_gib,
        startup_timeout_s=round(args.startup_timeout * 60),
        drain_timeout_s=checked.drain_timeout_s)


def run(args: argparse.Namespace) -> int:
    """Entry point of `jaxtune launch gke-serve`."""
    spec = spec_from_args(args)
    text = to_yaml(render_manifests(spec))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        logger.info("wrote %s", args.out)
    if args.dry_run:
        if not args.out:
            sys.stdout.write(text)
        return 0
    kubectl_apply(text, spec.namespace, f"Deployment and Service {spec.name}")
    logger.info("wait for it: kubectl rollout status deployment/%s; then, e.g., kubectl "
                "port-forward service/%s %d:%d", spec.name, spec.name, SERVE_PORT, SERVE_PORT)
    return 0
