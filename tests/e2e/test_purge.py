"""On a real cluster: a model that a live pod uses is not purged, however long it was unused; once the
pod is gone it is. The purge runs as the chart's CronJob runs it (`modelcache purge`, webhook image),
with the PVC mounted and a Role that lets it list the namespace's pods.

The model must be reachable from the cluster: MODELCACHE_E2E_MODEL (default a tiny public Hub model).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from tests.e2e.conftest import apply, eventually, kubectl, kubectl_json
from tests.e2e.test_cluster import RESTRICTED_CONTAINER

MODEL = os.environ.get("MODELCACHE_E2E_MODEL", "hf://hf-internal-testing/tiny-random-gpt2")
WEBHOOK_IMAGE = os.environ.get("MODELCACHE_E2E_WEBHOOK_IMAGE", "modelcache-webhook:dev")


def grant_pod_list(namespace: str) -> None:
    apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "purge", "namespace": namespace}})
    apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "purge", "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        }
    )
    apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "purge", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "purge"},
            "subjects": [{"kind": "ServiceAccount", "name": "purge", "namespace": namespace}],
        }
    )


def purge(namespace: str) -> str:
    """One `modelcache purge --unused-for 1s` Job on the namespace's cache PVC; its output."""
    name = f"purge-{uuid.uuid4().hex[:6]}"
    container: dict[str, Any] = {
        **RESTRICTED_CONTAINER,
        "name": "purge",
        "image": WEBHOOK_IMAGE,
        "command": ["modelcache", "purge", "--unused-for", "1s", "--pods-namespace", namespace],
        "env": [{"name": "MODELCACHE_CACHE_ROOT", "value": "/cache"}],
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
    }
    apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "serviceAccountName": "purge",
                        "restartPolicy": "Never",
                        "containers": [container],
                        "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "modelcache"}}],
                    }
                },
            },
        }
    )
    kubectl("-n", namespace, "wait", f"job/{name}", "--for=condition=Complete", "--timeout=300s")
    return kubectl("-n", namespace, "logs", f"job/{name}").stdout


def test_a_model_used_by_a_live_pod_is_not_purged(namespace: str) -> None:
    apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "user", "namespace": namespace, "annotations": {"modelcache.io/model": MODEL}},
            "spec": {"containers": [RESTRICTED_CONTAINER]},
        }
    )
    eventually(
        "the pod running with its model",
        lambda: kubectl_json("-n", namespace, "get", "pod", "user")["status"].get("phase") == "Running",
        seconds=600,
    )
    grant_pod_list(namespace)

    kept = purge(namespace)
    line = next(line for line in kept.splitlines() if MODEL.split("@")[0] in line)
    assert line.startswith("keep"), kept
    assert f"in use by 1 live pod(s): {namespace}/user" in line

    kubectl("-n", namespace, "delete", "pod", "user", "--wait=true", "--timeout=120s")
    removed = purge(namespace)
    line = next(line for line in removed.splitlines() if MODEL.split("@")[0] in line)
    assert line.startswith("removed"), removed
    assert ": unused for" in line
