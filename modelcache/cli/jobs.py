"""Prefetch Jobs: a pod that asks for the model through the annotation, like any serving pod, and exits."""

from __future__ import annotations

import hashlib
from typing import Any

from modelcache.contract import JsonObject
from modelcache.contract.annotation import INCLUDE_ANNOTATION, MODEL_ANNOTATION, REFRESH_ANNOTATION, SECRET_ANNOTATION
from modelcache.contract.keys import model_key
from modelcache.contract.sources import Source

JOB_TTL_SECONDS = 86400


def prefetch_job(
    source: Source,
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
    annotations = {MODEL_ANNOTATION: source.uri}
    if include:
        annotations[INCLUDE_ANNOTATION] = ",".join(include)
    if secret:
        annotations[SECRET_ANNOTATION] = secret
    if refresh:
        annotations[REFRESH_ANNOTATION] = "true"
    what = "refresh" if refresh else "prefetch"
    digest = hashlib.sha256(f"{model_key(source, include)}:{refresh}".encode()).hexdigest()[:10]
    labels = {"app.kubernetes.io/name": "modelcache", "app.kubernetes.io/component": "prefetch"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"modelcache-{what}-{digest}",
            "namespace": namespace,
            "labels": labels,
            "annotations": {"modelcache.io/description": f"{what} {source.uri}"},
        },
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": _pod_spec(image)},
        },
    }


def _pod_spec(image: str) -> JsonObject:
    """Restricted, no API token, one small container that runs only once the fetcher made the model ready."""
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    ready = {
        "name": "ready",
        "image": image,
        "command": ["python", "-c", "import os; print('model ready at', os.environ['MODEL_PATH'])"],
        "securityContext": restricted,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
    }
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [ready],
    }


def create_job(api: Any, job: JsonObject) -> str:
    """Create the Job; an existing one of the same name is reported, not replaced."""
    from modelcache.runtime.kube import ApiError, path

    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    try:
        api.create(path("batch/v1", "jobs", namespace=namespace), job)
    except ApiError as err:
        if err.status == 409:
            return (
                f"job {namespace}/{name} exists already: `kubectl -n {namespace} logs job/{name} -c modelcache-fetch`"
            )
        raise
    return f"job {namespace}/{name} created: `kubectl -n {namespace} logs -f job/{name} -c modelcache-fetch`"
