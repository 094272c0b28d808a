"""Offline schema validation of rendered Kubernetes manifests (test helper).

Exactly what is checked, and against what:

* Core/batch objects (the ConfigMap, and every JobSet ``replicatedJobs[].template`` wrapped as a
  ``batch/v1`` Job) against the Kubernetes OpenAPI-derived JSON schemas shipped by the PyPI
  package ``kubernetes-validate`` in *strict* mode (unknown fields are errors, as with
  ``kubectl apply --validate=strict``), for Kubernetes `K8S_VERSION`. This covers the whole pod
  template: containers, env/fieldRef, resources, volumes, nodeSelector, ports.
* The JobSet envelope (apiVersion/kind/metadata/spec: failurePolicy, network, replicatedJobs
  name/replicas, ...) against the JSON schema of the ``JobsetV1alpha2JobSet`` model in the PyPI
  package ``kubeflow-trainer-api`` (models generated from the JobSet v1alpha2 OpenAPI spec),
  tightened here with ``additionalProperties: false`` on every object so that a misspelt field
  fails like it would on the API server. The Job template inside is left to the check above.

Not checked: admission-time rules (e.g. that a node selector matches a node pool) and CRD
``x-kubernetes-validations`` expressions.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import jsonschema
import kubernetes_validate

K8S_VERSION = "1.33"
JOBSET_API_VERSION = "jobset.x-k8s.io/v1alpha2"


class ManifestInvalid(AssertionError):
    """A manifest does not match its schema."""


def _close_objects(node: Any) -> None:
    """Set additionalProperties: false on every object schema that lists its properties."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


@functools.cache
def jobset_schema() -> dict[str, Any]:
    """Strict JSON schema of a JobSet v1alpha2 object (Job templates left open)."""
    from kubeflow_trainer_api.models.jobset_v1alpha2_job_set import JobsetV1alpha2JobSet

    schema = copy.deepcopy(JobsetV1alpha2JobSet.model_json_schema(by_alias=True))
    schema["$defs"]["JobsetV1alpha2ReplicatedJob"]["properties"]["template"] = {
        "type": "object"}
    _close_objects(schema)
    schema["properties"]["apiVersion"] = {"const": JOBSET_API_VERSION}
    schema["properties"]["kind"] = {"const": "JobSet"}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return schema


@functools.cache
def _jobset_validator() -> jsonschema.protocols.Validator:
    schema = jobset_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _k8s_validate(obj: dict[str, Any], where: str) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise ManifestInvalid(f"{where}: {path}: {exc.message}") from None


def validate_manifest(obj: dict[str, Any]) -> None:
    """Raise `ManifestInvalid` unless `obj` (a ConfigMap or a JobSet) validates as above."""
    if obj.get("kind") != "JobSet":
        _k8s_validate(obj, f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}")
        return
    try:
        _jobset_validator().validate(obj)
    except jsonschema.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        raise ManifestInvalid(f"JobSet: {path}: {exc.message}") from None
    for rjob in obj["spec"]["replicatedJobs"]:
        template = rjob["template"]
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": template.get("metadata", {"name": rjob["name"]}),
               "spec": template["spec"]}
        _k8s_validate(job, f"JobSet replicatedJobs[{rjob['name']}].template")
