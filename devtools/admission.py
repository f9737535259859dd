"""Build AdmissionReviews the way the apiserver sends them, from manifests a user would apply."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid

from modelcache.contract import JsonObject

_WORKLOADS_WITH_TEMPLATES = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
REPLICASET_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"


def pod_from_manifest(manifest: JsonObject) -> tuple[JsonObject, str]:
    """The pod a manifest makes, and its namespace.

    A controller's pod has only generateName, and no namespace in its metadata (the apiserver sends
    the namespace in the request), as the replicaset controller creates them.
    """
    kind = manifest.get("kind")
    namespace = manifest.get("metadata", {}).get("namespace", "default")
    if kind == "Pod":
        return copy.deepcopy(manifest), namespace
    if kind in _WORKLOADS_WITH_TEMPLATES:
        template = copy.deepcopy(manifest["spec"]["template"])
        name = manifest["metadata"]["name"]
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        metadata = template.get("metadata", {})
        metadata["generateName"] = f"{name}-{digest}-"
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}, namespace
    raise ValueError(f"no pod in a {kind}")


def admission_review(
    pod: JsonObject,
    namespace: str,
    *,
    uid: str | None = None,
    dry_run: bool = False,
    operation: str = "CREATE",
    user: str = REPLICASET_CONTROLLER,
) -> JsonObject:
    """An AdmissionReview v1 request for creating `pod` in `namespace`."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod.get("metadata", {}).get("name", ""),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": user, "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
