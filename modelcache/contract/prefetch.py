"""Prefetch Jobs: a pod that asks for the model through the annotation, like any serving pod, and exits.

`modelcache prefetch --job` writes or creates one; the controller creates one for pods that wait for
their model behind the scheduling gate (they run no init container until then, so something must
fetch it). Plain JSON from the contract: standard library only."""

from __future__ import annotations

import hashlib

from modelcache.contract import JsonObject
from modelcache.contract.annotation import (
    INCLUDE_ANNOTATION,
    MODEL_ANNOTATION,
    REFRESH_ANNOTATION,
    SECRET_ANNOTATION,
    WAIT_ANNOTATION,
)
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
    labels: dict[str, str] | None = None,
    name: str = "",
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
    annotations[WAIT_ANNOTATION] = "false"  # it is what fetches the model: it must never wait behind a gate
    what = "refresh" if refresh else "prefetch"
    digest = hashlib.sha256(f"{model_key(source, include)}:{refresh}".encode()).hexdigest()[:10]
    labels = {"app.kubernetes.io/name": "modelcache", "app.kubernetes.io/component": "prefetch", **(labels or {})}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name or f"modelcache-{what}-{digest}",
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
