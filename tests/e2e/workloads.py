"""The workloads the e2e tests run, as users write them: restricted containers, the model annotation."""

from __future__ import annotations

import copy
from typing import Any

from tests.e2e.conftest import CLUSTER

SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Loads the model as an engine does with `--model org/name`: by repo id, offline, from HF_HUB_CACHE (the
# webhook's env), and through MODEL_PATH; then reports ready (the readiness probe checks the file).
LOAD_OFFLINE = """
import os, pathlib, sys, time
from huggingface_hub import snapshot_download
repo, _, revision = sys.argv[1].partition("@")
assert os.environ["HF_HUB_OFFLINE"] == "1"
snapshot = pathlib.Path(snapshot_download(repo, revision=revision or None))
pinned = pathlib.Path(os.environ["MODEL_PATH"])
assert sorted(p.name for p in snapshot.iterdir()) == sorted(p.name for p in pinned.iterdir())
pathlib.Path("/tmp/loaded").write_text(str(snapshot))
print("loaded", repo, "from", snapshot, flush=True)
time.sleep(10**9)
"""


def waiting_container(name: str = "app") -> dict[str, Any]:
    return {"name": name, "image": CLUSTER.pause_image, "securityContext": copy.deepcopy(SECURITY)}


def serving_container(model: str) -> dict[str, Any]:
    """An app that loads `model` (hf://org/name[@rev]) offline by its repo id and becomes Ready."""
    return {
        "name": "app",
        "image": CLUSTER.app_image,
        "command": ["python", "-c", LOAD_OFFLINE, model.removeprefix("hf://")],
        "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/loaded"]}, "periodSeconds": 2},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": {**copy.deepcopy(SECURITY), "readOnlyRootFilesystem": True},
    }


def pod(
    name: str, namespace: str, annotations: dict[str, str] | None = None, *, container: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"e2e": name}, "annotations": annotations or {}},
        "spec": {
            "containers": [container or waiting_container()],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            "terminationGracePeriodSeconds": 30,
        },
    }


def deployment(name: str, namespace: str, model: str, *, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"modelcache.io/model": model}},
                "spec": {"containers": [serving_container(model)], "volumes": [{"name": "tmp", "emptyDir": {}}]},
            },
        },
    }
