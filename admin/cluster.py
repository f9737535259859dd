"""What the admin tools ask the cluster: which live pods use which model, and prefetch Jobs.

The official client, raw JSON (no model classes): one filtered LIST of the pods the webhook labelled.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fetcher import contract

JsonObject = dict[str, Any]
_LIVE = "status.phase!=Succeeded,status.phase!=Failed"
JOB_TTL_SECONDS = 86400
# The apiserver's metadata-only list (what kubectl get --show-kind uses for wide lists); JSON as fallback.
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


def live_pods_by_key(api: Any, namespace: str = "") -> dict[str, list[str]]:
    """Model key -> namespace/name of every pod not yet finished that the webhook gave that model.

    Pending pods count: their fetcher may be about to find the model ready. `namespace` limits the
    question to one namespace, for a cache volume that only its namespace mounts (provision mode).
    Only metadata is asked for: the pods' specs (and any secret in their env) never reach us.
    """
    from kubernetes import client

    core = client.CoreV1Api(api)
    selectors = {"label_selector": contract.MODEL_KEY_LABEL, "field_selector": _LIVE, "_preload_content": False}
    selectors["_headers"] = {"Accept": _METADATA_ONLY}
    if namespace:
        response = core.list_namespaced_pod(namespace, **selectors)
    else:
        response = core.list_pod_for_all_namespaces(**selectors)
    pods: dict[str, list[str]] = {}
    for pod in json.loads(response.data).get("items", []):
        metadata = pod.get("metadata", {})
        key = metadata.get("labels", {}).get(contract.MODEL_KEY_LABEL)
        if key:
            pods.setdefault(key, []).append(f"{metadata.get('namespace')}/{metadata.get('name')}")
    return pods


def prefetch_job(
    source: contract.Source,
    *,
    namespace: str,
    image: str,
    include: tuple[str, ...] = (),
    secret: str | None = None,
    refresh: bool = False,
) -> JsonObject:
    """A Job whose pod asks for the model through the annotation, like any serving pod, and then exits.

    The webhook injects the fetcher, the namespace's cache PVC, the Secret's keys and the settings of
    this cluster, so the Job warms exactly the cache the serving pods will read. Its one container only
    prints MODEL_PATH: it runs after the fetcher, so it runs only when the model is ready.
    """
    key = contract.model_key(source, include)
    annotations = {contract.MODEL_ANNOTATION: source.uri}
    if include:
        annotations[contract.INCLUDE_ANNOTATION] = ",".join(include)
    if secret:
        annotations[contract.SECRET_ANNOTATION] = secret
    if refresh:
        annotations[contract.REFRESH_ANNOTATION] = "true"
    digest = hashlib.sha256(f"{key}:{refresh}".encode()).hexdigest()[:10]
    labels = {"app.kubernetes.io/name": "modelcache", "app.kubernetes.io/component": "prefetch"}
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"modelcache-{'refresh' if refresh else 'prefetch'}-{digest}",
            "namespace": namespace,
            "labels": labels,
            "annotations": {"modelcache.io/description": f"{'refresh' if refresh else 'prefetch'} {source.uri}"},
        },
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "ready",
                            "image": image,
                            "command": ["python", "-c", "import os; print('model ready at', os.environ['MODEL_PATH'])"],
                            "securityContext": restricted,
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "32Mi"},
                                "limits": {"cpu": "100m", "memory": "64Mi"},
                            },
                        }
                    ],
                },
            },
        },
    }


def create_job(api: Any, job: JsonObject) -> str:
    """Create the Job; an existing one of the same name is reported, not replaced."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    try:
        client.BatchV1Api(api).create_namespaced_job(namespace, job, _preload_content=False)
    except ApiException as err:
        if err.status == 409:
            return (
                f"job {namespace}/{name} exists already: `kubectl -n {namespace} logs job/{name} -c modelcache-fetch`"
            )
        raise
    return f"job {namespace}/{name} created: `kubectl -n {namespace} logs -f job/{name} -c modelcache-fetch`"
