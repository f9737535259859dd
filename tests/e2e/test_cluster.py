"""On a real cluster: what the webhook does to pods, the fetcher's isolation, and the fail-closed policy."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import CLUSTER, FETCHER, SYSTEM, apply, eventually, kubectl, kubectl_json
from tests.e2e.workloads import pod

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


def test_an_annotated_deployment_gets_stored_mutated_admitted_pods(namespace: str) -> None:
    template = pod("llm", namespace, {"modelcache.io/model": CLUSTER.model})
    apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "llm", "namespace": namespace},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"e2e": "llm"}},
                "template": {
                    "metadata": {k: template["metadata"][k] for k in ("labels", "annotations")},
                    "spec": template["spec"],
                },
            },
        }
    )

    def stored() -> list[dict[str, Any]]:
        pods = kubectl_json("-n", namespace, "get", "pods", "-l", "e2e=llm")["items"]
        return pods if len(pods) == 2 else []

    for stored_pod in eventually("two pods of the Deployment", stored):
        init = [c["name"] for c in stored_pod["spec"].get("initContainers", [])]
        assert init == [FETCHER]
        volumes = {v["name"]: v for v in stored_pod["spec"]["volumes"]}
        assert volumes["modelcache"]["persistentVolumeClaim"]["claimName"] == "modelcache"
        env = {e["name"]: e.get("value") for e in stored_pod["spec"]["containers"][0]["env"]}
        assert env["HF_HUB_OFFLINE"] == "1"
        assert "modelcache.io/model-key" in stored_pod["metadata"]["labels"]


def test_the_fetcher_gets_no_service_account_token(namespace: str) -> None:
    """The apiserver's ServiceAccount plugin mounts the token into every container it finds no mount in."""
    apply(pod("isolated", namespace, {"modelcache.io/model": CLUSTER.model}))
    stored = kubectl_json("-n", namespace, "get", "pod", "isolated")
    (fetcher,) = [c for c in stored["spec"]["initContainers"] if c["name"] == FETCHER]
    at_token_path = [m["name"] for m in fetcher["volumeMounts"] if m["mountPath"] == TOKEN_PATH]
    assert at_token_path == ["modelcache-no-token"]
    token_volumes = [v["name"] for v in stored["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    app_mounts = [m["name"] for m in stored["spec"]["containers"][0].get("volumeMounts", [])]
    assert set(token_volumes) <= set(app_mounts)  # the app keeps what the pod asked for


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


def no_webhook_pod_left() -> bool:
    """Scaled to 0: terminating pods keep serving through their preStop sleep; wait until they are gone."""
    pods = kubectl_json("-n", SYSTEM, "get", "pods", "-l", "app.kubernetes.io/component=webhook")["items"]
    slices = kubectl_json("-n", SYSTEM, "get", "endpointslices", "-l", "kubernetes.io/service-name=modelcache-webhook")[
        "items"
    ]
    serving = [e for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("serving", True)]
    return not pods and not serving


def test_the_policy_refuses_annotated_pods_while_the_webhook_is_unreachable(namespace: str) -> None:
    kubectl("-n", SYSTEM, "scale", "deploy/modelcache-webhook", "--replicas=0")
    try:
        eventually("no webhook pod serving", no_webhook_pod_left)
        annotated = pod("while-down", namespace, {"modelcache.io/model": CLUSTER.model})
        result = kubectl("apply", "-f", "-", stdin=json.dumps(annotated), check=False)
        assert result.returncode != 0
        assert "was not injected" in result.stderr
        apply(pod("plain-while-down", namespace))  # every other pod is unaffected by the outage
    finally:
        kubectl("-n", SYSTEM, "scale", "deploy/modelcache-webhook", "--replicas=2")
        kubectl("-n", SYSTEM, "rollout", "status", "deploy/modelcache-webhook", "--timeout=300s")
