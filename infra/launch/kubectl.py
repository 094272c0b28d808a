"""`kubectl apply -f -` of rendered manifests: what `jaxtune launch gke` and `gke-serve` share."""

from __future__ import annotations

import logging
import shlex
import subprocess

logger = logging.getLogger(__name__)


class KubectlApplyError(ValueError):
    """kubectl exited non-zero (its own output already went to the terminal)."""


def kubectl_apply(manifests: str, namespace: str | None, what: str) -> None:
    """Apply multi-document YAML `manifests` (in `namespace`, else kubectl's current);
    `what` names the objects in the log line."""
    argv = ["kubectl", "apply", "-f", "-"]
    if namespace:
        argv += ["--namespace", namespace]
    logger.info("%s (%s)", shlex.join(argv), what)
    result = subprocess.run(argv, input=manifests, text=True, check=False)
    if result.returncode != 0:
        raise KubectlApplyError(f"kubectl apply failed (exit {result.returncode})")
