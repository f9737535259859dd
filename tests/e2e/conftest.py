"""The e2e suite runs only against a real cluster: KUBECONFIG must point at one. Never faked.

It installs manifests/ (base, with the images named by MODELCACHE_E2E_WEBHOOK_IMAGE and
MODELCACHE_E2E_FETCHER_IMAGE, which the cluster must be able to pull or already have, e.g. `kind load`),
waits for the rollout, runs, and uninstalls unless MODELCACHE_E2E_KEEP=1. docs/development.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
KUBECTL = str(Path(sys.executable).parent / "kubectl")
SYSTEM = "modelcache-system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="e2e: set KUBECONFIG to a cluster to run (docs/development.md)")
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(skip)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, check=check, timeout=300)


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def apply(obj: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps(obj))


def eventually(what: str, probe: Any, seconds: float = 180) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(2)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """manifests/base with the e2e images, rolled out and ready."""
    webhook_image = os.environ.get("MODELCACHE_E2E_WEBHOOK_IMAGE", "modelcache-webhook:dev")
    fetcher_image = os.environ.get("MODELCACHE_E2E_FETCHER_IMAGE", "modelcache-fetcher:dev")
    overlay = tmp_path_factory.mktemp("overlay")
    base = os.path.relpath(ROOT / "manifests" / "base", overlay)
    name, _, tag = webhook_image.rpartition(":")
    (overlay / "kustomization.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [base],
                "images": [{"name": "modelcache-webhook", "newName": name, "newTag": tag}],
                "patches": [
                    {
                        "target": {"kind": "ConfigMap", "name": "modelcache-webhook-settings"},
                        "patch": json.dumps(
                            [{"op": "replace", "path": "/data/MODELCACHE_FETCHER_IMAGE", "value": fetcher_image}]
                        ),
                    }
                ],
            }
        )
    )
    kubectl("apply", "-k", str(overlay))
    try:
        kubectl("-n", SYSTEM, "rollout", "status", "deploy/modelcache-controller", "--timeout=300s")
        kubectl("-n", SYSTEM, "rollout", "status", "deploy/modelcache-webhook", "--timeout=300s")
        yield
    finally:
        if not os.environ.get("MODELCACHE_E2E_KEEP"):
            kubectl("delete", "-k", str(overlay), "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def namespace(installed: None) -> Iterator[str]:
    """A fresh namespace labelled Pod Security restricted, with a ReadWriteMany cache PVC."""
    name = f"modelcache-e2e-{uuid.uuid4().hex[:6]}"
    apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }
    )
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "modelcache", "namespace": name},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    if os.environ.get("MODELCACHE_E2E_STORAGE_CLASS"):
        claim["spec"]["storageClassName"] = os.environ["MODELCACHE_E2E_STORAGE_CLASS"]
    apply(claim)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)
