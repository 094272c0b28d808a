"""`jaxtune launch gke`: render (and apply) a JobSet that trains on a GKE TPU slice or GPU nodes.

``--dry-run`` prints the manifests (a ConfigMap with the resolved run config, then the JobSet);
``--out FILE`` writes them; otherwise they go to ``kubectl apply -f -``. For a TPU slice the
run's train step is first compiled for it here (`fit_check`; libtpu) and a run that does not
fit in HBM is refused, unless ``--skip-plan``; a dry run prints that plan as YAML comments.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from infra.launch.fit_check import as_comments, check_fits
from infra.launch.gke_manifest import GkeJobSpec, GpuNodes, render_manifests, to_yaml
from infra.launch.kubectl import kubectl_apply
from infra.launch.tpu_types import parse_tpu_type
from train_jax.config.run_config import load_raw_run_config

logger = logging.getLogger(__name__)

# Pod hostnames are "<name>-workers-<job>-<pod>" and must stay a 63-character DNS label.
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")


class GkeLaunchError(ValueError):
    """A `jaxtune launch gke` argument is invalid or kubectl failed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `jaxtune launch gke` options."""
    parser.add_argument("--accelerator", required=True, choices=("tpu", "gpu"))
    parser.add_argument("--config", required=True, help="run config YAML (as for jaxtune train)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, applied before the config is embedded")
    parser.add_argument("--image", required=True,
                        help="training image (infra/docker/Dockerfile.train) in your registry")
    parser.add_argument("--name", default="jaxtune-train",
                        help="JobSet name (DNS label, at most 40 characters)")
    parser.add_argument("--namespace", help="Kubernetes namespace (default: kubectl's current)")
    tpu = parser.add_argument_group("TPU (--accelerator tpu)")
    tpu.add_argument("--tpu-type", help="slice type, e.g. v5p-16, v5litepod-16, v6e-32")
    tpu.add_argument("--topology", help="slice topology when the type has no default (v5p-384)")
    gpu = parser.add_argument_group("GPU (--accelerator gpu)")
    gpu.add_argument("--gpu-type", default="nvidia-h100-80gb",
                     help="node label cloud.google.com/gke-accelerator (default: %(default)s)")
    gpu.add_argument("--nodes", type=int, help="GPU nodes = JAX processes (default: 1)")
    gpu.add_argument("--gpus-per-node", type=int, help="GPUs per node (default: 8)")
    parser.add_argument("--max-restarts", type=int, default=0,
                        help="JobSet restarts of the whole group after a failure")
    parser.add_argument("--service-account", help="Kubernetes service account (e.g. with "
                                                  "Workload Identity access to gs:// buckets)")
    parser.add_argument("--out", help="write the manifests to this file")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (TPU) and the manifests; apply nothing")
    parser.add_argument("--skip-plan", action="store_true",
                        help="TPU: do not compile the run for the slice first (the check needs "
                             "libtpu here and refuses a run that does not fit in HBM)")


def spec_from_args(args: argparse.Namespace) -> GkeJobSpec:
    """Validate the command line into a `GkeJobSpec`."""
    if not _NAME_RE.match(args.name):
        raise GkeLaunchError(f"invalid --name {args.name!r}: lowercase letters, digits and '-', "
                             "starting with a letter, at most 40 characters")
    if args.max_restarts < 0:
        raise GkeLaunchError("--max-restarts must be >= 0")
    # Validated by the training config loader; embedded as the resolved mapping.
    run_config = load_raw_run_config(args.config, args.overrides)
    common = {"name": args.name, "image": args.image, "run_config": run_config,
              "namespace": args.namespace, "max_restarts": args.max_restarts,
              "service_account": args.service_account}
    if args.accelerator == "tpu":
        if not args.tpu_type:
            raise GkeLaunchError("--accelerator tpu needs --tpu-type (e.g. v5p-16)")
        if args.nodes is not None or args.gpus_per_node is not None:
            raise GkeLaunchError("--nodes/--gpus-per-node apply to --accelerator gpu only; a "
                                 "TPU slice's hosts follow from --tpu-type")
        return GkeJobSpec(accelerator="tpu", tpu=parse_tpu_type(args.tpu_type, args.topology),
                          **common)
    if args.tpu_type or args.topology:
        raise GkeLaunchError("--tpu-type/--topology apply to --accelerator tpu only")
    nodes = 1 if args.nodes is None else args.nodes
    gpus = 8 if args.gpus_per_node is None else args.gpus_per_node
    if nodes < 1 or gpus < 1:
        raise GkeLaunchError("--nodes and --gpus-per-node must be >= 1")
    return GkeJobSpec(accelerator="gpu", gpu=GpuNodes(args.gpu_type, nodes, gpus), **common)


def run(args: argparse.Namespace) -> int:
    """Entry point of `jaxtune launch gke`."""
    spec = spec_from_args(args)
    fit = None
    if spec.tpu is not None and not args.skip_plan:
        fit = check_fits(args.config, args.overrides, spec.tpu)
    text = to_yaml(render_manifests(spec))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        logger.info("wrote %s", args.out)
    if args.dry_run and not args.out:
        sys.stdout.write(as_comments(fit) + text if fit is not None else text)
        return 0
    if fit is not None:
        logger.info("the run fits:\n%s", fit)
    if args.dry_run:
        return 0
    kubectl_apply(text, spec.namespace, f"JobSet {spec.name}, {spec.hosts} pod(s)")
    logger.info("follow the logs: kubectl logs -f -l jobset.sigs.k8s.io/jobset-name=%s "
                "--max-log-requests=%d", spec.name, max(spec.hosts, 5))
    return 0
