"""The e2e suite runs only against a real cluster: KUBECONFIG must point at one. Never faked.

Everything it needs from the cluster comes from its environment (docs/development.md), so that it runs
on a cluster without internet:

- MODELCACHE_E2E_WEBHOOK_IMAGE, MODELCACHE_E2E_FETCHER_IMAGE: images the cluster can pull or has
  (default modelcache-webhook:dev, modelcache-fetcher:dev, as `make images` tags them);
- MODELCACHE_E2E_APP_IMAGE: an image with Python and huggingface_hub that plays the serving app
  (default the fetcher image, which has both); MODELCACHE_E2E_PAUSE_IMAGE: a container that only waits
  (default registry.k8s.io/pause:3.10);
- MODELCACHE_E2E_MODEL: an hf:// model the origin serves (default a tiny public one);
  MODELCACHE_E2E_HF_ENDPOINT: a Hub mirror (the webhook's MODELCACHE_HF_ENDPOINT);
  MODELCACHE_E2E_S3_ENDPOINT: an S3 endpoint (MODELCACHE_S3_ENDPOINT);
  MODELCACHE_E2E_BIG_MODEL: a model that takes at least ~10 s to download (for the deletion test);
- MODELCACHE_E2E_OVERLAY: what to install, `base` (existing volumes: the suite creates a PVC in each of
  its namespaces), `overlays/nfs` (clone: one shared cache), MODELCACHE_E2E_STORAGE_CLASS its class, or
  `overlays/node-local` (each node's own disk: the suite prepares the nodes with
  examples/admin/node-local-prepare.yaml first, which needs a namespace Pod Security lets run as root).

It installs that overlay with those settings, waits for the rollout, runs, and uninstalls unless
MODELCACHE_E2E_KEEP=1. A fetch that fails for good fails its test at once with the fetcher's message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
KUBECTL = str(Path(sys.executable).parent / "kubectl")
SYSTEM = "modelcache-system"
FETCHER = "modelcache-fetch"


@dataclass(frozen=True)
class Cluster:
    """What the suite was told about the cluster under test."""

    webhook_image: str = "modelcache-webhook:dev"
    fetcher_image: str = "modelcache-fetcher:dev"
    app_image: str = ""
    pause_image: str = "registry.k8s.io/pause:3.10"
    model: str = "hf://hf-internal-testing/tiny-random-gpt2"
    big_model: str = ""
    hf_endpoint: str = ""
    s3_endpoint: str = ""
    overlay: str = "base"
    storage_class: str = ""

    @classmethod
    def from_env(cls) -> Cluster:
        env = os.environ
        found = {
            name: env[f"MODELCACHE_E2E_{name.upper()}"]
            for name in cls.__dataclass_fields__
            if env.get(f"MODELCACHE_E2E_{name.upper()}")
        }
        cluster = cls(**found)
        return cluster if cluster.app_image else cls(**{**found, "app_image": cluster.fetcher_image})

    @property
    def node_local(self) -> bool:
        """Each node's own cache, for every namespace (the node-local overlay)."""
        return self.overlay.rstrip("/").endswith("node-local")

    @property
    def shared(self) -> bool:
        """One cache for every namespace (clone mode), rather than a PVC per namespace or a cache per node."""
        return self.overlay != "base" and not self.node_local

    def webhook_settings(self) -> dict[str, str]:
        settings = {"MODELCACHE_FETCHER_IMAGE": self.fetcher_image}
        if self.hf_endpoint:
            settings["MODELCACHE_HF_ENDPOINT"] = self.hf_endpoint
        if self.s3_endpoint:
            settings["MODELCACHE_S3_ENDPOINT"] = self.s3_endpoint
        return settings


CLUSTER = Cluster.from_env()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="e2e: set KUBECONFIG to a cluster to run (docs/development.md)")
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(skip)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, check=False, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: exit {result.returncode}\n{result.stderr[-2000:]}")
    return result


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def apply(obj: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps(obj))


def eventually(what: str, probe: Callable[[], Any], seconds: float = 180, every: float = 2) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(every)


def fetcher_state(pod: dict[str, Any]) -> tuple[str, int | None, str]:
    """The fetcher init container's (state, exit code, message), from its current or last termination."""
    for status in pod.get("status", {}).get("initContainerStatuses", []):
        if status["name"] != FETCHER:
            continue
        for state in (status.get("state", {}), status.get("lastState", {})):
            if "terminated" in state:
                done = state["terminated"]
                return "terminated", int(done.get("exitCode", -1)), str(done.get("message", ""))
        return ("running" if "running" in status.get("state", {}) else "waiting"), None, ""
    return "absent", None, ""


def fetch_failed(pod: dict[str, Any]) -> str:
    """The fetcher's message if it failed for good (any exit but 0 and 143, a deletion); "" otherwise."""
    state, code, message = fetcher_state(pod)
    if state == "terminated" and code not in (0, 143):
        name = pod["metadata"]["name"]
        return f"the fetcher of pod {name} exited {code}: {message.strip() or '(no message)'}"
    return ""


def wait_for_pods(namespace: str, selector: str, count: int, *, ready: bool, seconds: float = 600) -> list[Any]:
    """`count` pods matching the selector, Running (or Ready); fails at once when a fetch failed for good."""

    def probe() -> list[Any]:
        pods = kubectl_json("-n", namespace, "get", "pods", "-l", selector)["items"]
        for item in pods:
            failure = fetch_failed(item)
            if failure:
                raise AssertionError(failure)
        done = [item for item in pods if _ready(item) or (not ready and item["status"].get("phase") == "Running")]
        return done if len(done) >= count else []

    result: list[Any] = eventually(f"{count} pod(s) {selector} in {namespace}", probe, seconds=seconds)
    return result


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def overlay_for(directory: Path) -> Path:
    """A kustomization over CLUSTER.overlay with the images and settings under test."""
    base = os.path.relpath(ROOT / "manifests" / CLUSTER.overlay, directory)
    name, _, tag = CLUSTER.webhook_image.rpartition(":")
    patch = [{"op": "add", "path": f"/data/{k}", "value": v} for k, v in CLUSTER.webhook_settings().items()]
    patches = [{"target": {"kind": "ConfigMap", "name": "modelcache-webhook-settings"}, "patch": json.dumps(patch)}]
    image = [{"op": "replace", "path": "/data/MODELCACHE_FETCHER_IMAGE", "value": CLUSTER.fetcher_image}]
    controller = {"kind": "ConfigMap", "name": "modelcache-controller-settings"}
    patches.append({"target": controller, "patch": json.dumps(image)})
    if CLUSTER.storage_class and CLUSTER.shared:
        value = [{"op": "add", "path": "/data/MODELCACHE_STORAGE_CLASS", "value": CLUSTER.storage_class}]
        patches.append(
            {"target": {"kind": "ConfigMap", "name": "modelcache-controller-settings"}, "patch": json.dumps(value)}
        )
    if CLUSTER.node_local and CLUSTER.hf_endpoint:  # the warm container fetches from the mirror too
        env = [{"op": "add", "path": "/spec/template/spec/containers/1/env/-",
                "value": {"name": "HF_ENDPOINT", "value": CLUSTER.hf_endpoint}}]  # fmt: skip
        patches.append({"target": {"kind": "DaemonSet", "name": "modelcache-node-agent"}, "patch": json.dumps(env)})
    fetcher_name, _, fetcher_tag = CLUSTER.fetcher_image.rpartition(":")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "images": [
            {"name": "modelcache-webhook", "newName": name, "newTag": tag},
            {"name": "modelcache-fetcher", "newName": fetcher_name, "newTag": fetcher_tag},  # the warm container
        ],
        "patches": patches,
    }
    (directory / "kustomization.yaml").write_text(json.dumps(kustomization))
    return directory


def install(overlay: Path) -> None:
    kubectl("apply", "-k", str(overlay))
    for deployment in ("modelcache-controller", "modelcache-webhook"):
        kubectl("-n", SYSTEM, "rollout", "status", f"deploy/{deployment}", "--timeout=300s")


def prepare_nodes() -> None:
    """examples/admin/node-local-prepare.yaml with the fetcher image under test, rolled out on every node."""
    import yaml

    for obj in yaml.safe_load_all((ROOT / "examples" / "admin" / "node-local-prepare.yaml").read_text()):
        if obj["kind"] == "DaemonSet":
            spec = obj["spec"]["template"]["spec"]
            for container in [*spec["initContainers"], *spec["containers"]]:
                container["image"] = CLUSTER.fetcher_image
        apply(obj)
    rollout = ("rollout", "status", "daemonset/modelcache-node-prepare", "--timeout=300s")
    kubectl("-n", "modelcache-node-prepare", *rollout)


def uninstall(overlay: Path, *, wait: bool) -> None:
    kubectl("delete", "-k", str(overlay), "--ignore-not-found", f"--wait={str(wait).lower()}", check=False)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The overlay with the e2e images and settings, rolled out and ready; the overlay's directory."""
    overlay = overlay_for(tmp_path_factory.mktemp("overlay"))
    if CLUSTER.node_local:
        prepare_nodes()
    install(overlay)
    try:
        yield overlay
    finally:
        if not os.environ.get("MODELCACHE_E2E_KEEP"):
            uninstall(overlay, wait=False)


def new_namespace(prefix: str = "modelcache-e2e") -> str:
    """A fresh namespace labelled Pod Security restricted, with a cache PVC unless the cache is shared."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }
    )
    if not CLUSTER.shared and not CLUSTER.node_local:
        claim: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "modelcache", "namespace": name},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
        }
        if CLUSTER.storage_class:
            claim["spec"]["storageClassName"] = CLUSTER.storage_class
        apply(claim)
    return name


@pytest.fixture
def namespace(installed: Path) -> Iterator[str]:
    name = new_namespace()
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)
