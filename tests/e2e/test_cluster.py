"""On a real cluster: stored pods are mutated and admitted, others untouched, bad annotations denied
with their message, and annotated pods refused by the ValidatingAdmissionPolicy when the webhook is down.
"""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import SYSTEM, apply, eventually, kubectl, kubectl_json

RESTRICTED_CONTAINER: dict[str, Any] = {
    "name": "app",
    "image": "registry.k8s.io/pause:3.10",
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


def pod(name: str, namespace: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"containers": [RESTRICTED_CONTAINER]},
    }


def test_an_annotated_deployment_gets_stored_mutated_admitted_pods(namespace: str) -> None:
    apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "llm", "namespace": namespace},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "llm"}},
                "template": {
                    "metadata": {"labels": {"app": "llm"}, "annotations": {"modelcache.io/model": "hf://org/model"}},
                    "spec": {"containers": [RESTRICTED_CONTAINER]},
                },
            },
        }
    )

    def stored() -> list[dict[str, Any]]:
        pods = kubectl_json("-n", namespace, "get", "pods", "-l", "app=llm")["items"]
        return pods if len(pods) == 2 else []

    for stored_pod in eventually("two pods of the Deployment", stored):
        init = [c["name"] for c in stored_pod["spec"].get("initContainers", [])]
        assert init == ["modelcache-fetch"]
        volumes = {v["name"]: v for v in stored_pod["spec"]["volumes"]}
        assert volumes["modelcache"]["persistentVolumeClaim"]["claimName"] == "modelcache"
        env = {e["name"]: e.get("value") for e in stored_pod["spec"]["containers"][0]["env"]}
        assert env["HF_HUB_OFFLINE"] == "1"
        assert "modelcache.io/model-key" in stored_pod["metadata"]["labels"]


def test_a_pod_without_the_annotation_is_untouched(namespace: str) -> None:
    apply(pod("plain", namespace))
    stored = kubectl_json("-n", namespace, "get", "pod", "plain")
    assert "initContainers" not in stored["spec"]
    assert all(v["name"] != "modelcache" for v in stored["spec"].get("volumes", []))


def test_an_invalid_annotation_is_denied_with_its_message(namespace: str) -> None:
    result = kubectl(
        "apply", "-f", "-", stdin=json.dumps(pod("bad", namespace, {"modelcache.io/model": "ftp://x"})), check=False
    )
    assert result.returncode != 0
    assert "modelcache" in result.stderr
    assert "ftp://x" in result.stderr


def test_the_policy_refuses_annotated_pods_while_the_webhook_is_unreachable(namespace: str) -> None:
    kubectl("-n", SYSTEM, "scale", "deploy/modelcache-webhook", "--replicas=0")
    try:
        eventually(
            "no webhook endpoints",
            lambda: not kubectl_json("-n", SYSTEM, "get", "endpoints", "modelcache-webhook").get("subsets"),
        )
        annotated = pod("while-down", namespace, {"modelcache.io/model": "hf://org/model"})
        result = kubectl("apply", "-f", "-", stdin=json.dumps(annotated), check=False)
        assert result.returncode != 0
        assert "was not injected" in result.stderr
        apply(pod("plain-while-down", namespace))  # every other pod is unaffected by the outage
    finally:
        kubectl("-n", SYSTEM, "scale", "deploy/modelcache-webhook", "--replicas=2")
        kubectl("-n", SYSTEM, "rollout", "status", "deploy/modelcache-webhook", "--timeout=300s")
