"""On a real cluster: `kubectl wait` on a CachedModel, a gated Deployment whose pods bind only once their
model is Ready (and so hold no node while it downloads), and the Events that say why a pod waits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from modelcache.contract import annotation, cachedmodel, keys, sources, wire
from tests.e2e.conftest import CLUSTER, apply, eventually, kubectl, kubectl_json, wait_for_pods
from tests.e2e.workloads import deployment, pod, serving_container


def cold_variant() -> tuple[str, tuple[str, ...]]:
    """The e2e model with include patterns of its own: a model key no earlier test made ready."""
    include = ("*", f"e2e-{uuid.uuid4().hex[:8]}-*")
    return ",".join(include), include


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_kubectl_waits_for_a_cachedmodel_that_a_pod_made(namespace: str) -> None:
    if not CLUSTER.shared and not CLUSTER.node_local:
        pytest.skip("the cache agent runs beside the shared volume: run with MODELCACHE_E2E_OVERLAY=overlays/nfs")
    patterns, include = cold_variant()
    annotations = {annotation.MODEL_ANNOTATION: CLUSTER.model, annotation.INCLUDE_ANNOTATION: patterns}
    apply(pod("maker", namespace, annotations, container=serving_container(CLUSTER.model)))
    name = cachedmodel.name_for_key(keys.model_key(sources.parse_source(CLUSTER.model), include))
    eventually(f"cachedmodel/{name}", lambda: kubectl("get", f"cachedmodel/{name}", check=False).returncode == 0)
    kubectl("wait", "--for=condition=Ready", f"cachedmodel/{name}", "--timeout=600s")
    table = kubectl("get", "cachedmodels", name).stdout.splitlines()
    assert table[0].split() == ["NAME", "SOURCE", "PHASE", "SIZE", "PROGRESS", "PODS", "AGE"]
    assert " Ready " in table[1]
    status = kubectl_json("get", f"cachedmodel/{name}")["status"]
    assert status["sizeBytes"] > 0
    assert status["caches"][0]["phase"] == "Ready"


def test_a_gated_deployment_binds_only_once_its_model_is_ready(namespace: str) -> None:
    patterns, _ = cold_variant()
    workload = deployment("gated", namespace, CLUSTER.model, replicas=4)
    template: dict[str, Any] = workload["spec"]["template"]["metadata"]
    template["annotations"] |= {annotation.WAIT_ANNOTATION: "true", annotation.INCLUDE_ANNOTATION: patterns}
    apply(workload)

    def gated_pods() -> list[Any]:
        found = kubectl_json("-n", namespace, "get", "pods", "-l", "app=gated")["items"]
        return found if len(found) == 4 else []

    for item in eventually("the 4 pods created", gated_pods, seconds=120):
        gates = [g["name"] for g in item["spec"].get("schedulingGates", [])]
        assert item["spec"].get("nodeName") or gates == [wire.SCHEDULING_GATE], item["spec"]  # unbound: gated
    ready = wait_for_pods(namespace, "app=gated", 4, ready=True, seconds=900)
    jobs = kubectl_json("-n", namespace, "get", "jobs", "-l", "app.kubernetes.io/component=model-wait")["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]  # one fetch for the four pods
    finished = when(jobs[0]["status"]["completionTime"])
    for item in ready:
        scheduled = next(c for c in item["status"]["conditions"] if c["type"] == "PodScheduled")
        assert when(scheduled["lastTransitionTime"]) >= finished.replace(microsecond=0), (
            f"{item['metadata']['name']} was bound at {scheduled['lastTransitionTime']}, before its model was "
            f"ready at {jobs[0]['status']['completionTime']}"
        )
    name = ready[0]["metadata"]["name"]
    events = kubectl_json("-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}")
    reasons = {e["reason"] for e in events["items"]}
    assert {"WaitingForModel", "ModelReady"} <= reasons, reasons
