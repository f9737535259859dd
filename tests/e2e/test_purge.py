"""On a real cluster: a model that a live pod uses is not purged, however long it was unused; once the
pod is gone it is. The purge runs as the chart's CronJob runs it (`modelcache purge`, webhook image),
with the PVC mounted and a Role that lets it list the namespace's pods.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.conftest import CLUSTER, apply, kubectl, wait_for_pods
from tests.e2e.workloads import SECURITY, pod


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
        "name": "purge",
        "image": CLUSTER.webhook_image,
        "command": ["modelcache", "purge", "--unused-for", "1s", "--pods-namespace", namespace],
        "env": [{"name": "MODELCACHE_CACHE_ROOT", "value": "/cache"}],
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
        "securityContext": {**SECURITY, "readOnlyRootFilesystem": True},
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
    if CLUSTER.shared or CLUSTER.node_local:
        pytest.skip("with one shared cache, other tests' pods use it too: run with MODELCACHE_E2E_OVERLAY=base")
    model = CLUSTER.model
    apply(pod("user", namespace, {"modelcache.io/model": model}))
    wait_for_pods(namespace, "e2e=user", 1, ready=False)
    grant_pod_list(namespace)

    kept = purge(namespace)
    line = next(line for line in kept.splitlines() if model.split("@")[0] in line)
    assert line.startswith("keep"), kept
    assert f"in use by 1 live pod(s): {namespace}/user" in line

    kubectl("-n", namespace, "delete", "pod", "user", "--wait=true", "--timeout=120s")
    removed = purge(namespace)
    line = next(line for line in removed.splitlines() if model.split("@")[0] in line)
    assert line.startswith("removed"), removed
    assert ": unused for" in line
