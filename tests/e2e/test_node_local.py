"""On a real cluster with node-local caches (MODELCACHE_E2E_OVERLAY=overlays/node-local): a Deployment in a
Pod Security restricted namespace spread over the nodes downloads once per node, its namespace mounts the
node-local PVC, every node's agent reports its copy, and a CachedModel warms every node ahead of pods."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from typing import Any

import pytest

from modelcache.contract import annotation, cachedmodel, keys, sources
from tests.e2e.conftest import CLUSTER, SYSTEM, apply, eventually, fetcher_state, kubectl, kubectl_json, wait_for_pods
from tests.e2e.workloads import deployment, pod, serving_container

pytestmark = pytest.mark.skipif(
    not CLUSTER.node_local, reason="node-local caches: run with MODELCACHE_E2E_OVERLAY=overlays/node-local"
)


def agent_nodes() -> set[str]:
    """The nodes whose node agent runs (the DaemonSet's pods), once they all do."""
    kubectl("-n", SYSTEM, "rollout", "status", "daemonset/modelcache-node-agent", "--timeout=300s")
    pods = kubectl_json("-n", SYSTEM, "get", "pods", "-l", "app.kubernetes.io/component=node-agent")["items"]
    return {item["spec"]["nodeName"] for item in pods}


def entries(name: str) -> dict[str, str]:
    found = kubectl("get", f"cachedmodel/{name}", "-o", "json", check=False)
    if found.returncode != 0:
        return {}
    caches = (json.loads(found.stdout).get("status") or {}).get("caches") or []
    return {str(e.get("node", "")): str(e["phase"]) for e in caches if e.get("node")}


def test_a_deployment_in_a_restricted_namespace_downloads_once_per_node(namespace: str) -> None:
    nodes = agent_nodes()
    include = ("*", f"e2e-{uuid.uuid4().hex[:8]}-*")  # a model key no other test made ready
    workload = deployment("spread", namespace, CLUSTER.model, replicas=2 * len(nodes))
    template: dict[str, Any] = workload["spec"]["template"]
    template["metadata"]["annotations"][annotation.INCLUDE_ANNOTATION] = ",".join(include)
    template["spec"]["topologySpreadConstraints"] = [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"app": "spread"}}}
    ]  # fmt: skip
    apply(workload)
    ready = wait_for_pods(namespace, "app=spread", 2 * len(nodes), ready=True, seconds=900)
    claim = kubectl_json("-n", namespace, "get", "pvc", "modelcache-node")
    assert claim["status"]["phase"] == "Bound"
    volume = kubectl_json("get", "pv", claim["spec"]["volumeName"])
    assert "hostPath" in volume["spec"]  # each node's own directory, through a PVC restricted allows
    downloads = Counter(item["spec"]["nodeName"] for item in ready if fetcher_state(item)[2].startswith("downloaded"))
    assert all(count == 1 for count in downloads.values()), downloads  # one copy per node, never per pod
    used = {item["spec"]["nodeName"] for item in ready}
    name = cachedmodel.name_for_key(keys.model_key(sources.parse_source(CLUSTER.model), include))
    eventually(
        "every used node's agent reporting its copy",
        lambda: all(entries(name).get(node) == "Ready" for node in used),
        seconds=300,
    )
    listed = subprocess.run(
        [sys.executable, "-m", "modelcache", "ls", "--nodes"], capture_output=True, text=True, env=dict(os.environ),
        timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines()[1:-1] if name in line} == used


def test_a_cachedmodel_warms_every_node_ahead_of_its_first_pod(namespace: str) -> None:
    nodes = agent_nodes()
    include = ("*", f"e2e-warm-{uuid.uuid4().hex[:8]}-*")
    key = keys.model_key(sources.parse_source(CLUSTER.model), include)
    name = cachedmodel.name_for_key(key)
    spec = {"source": CLUSTER.model, "include": list(include), "nodeSelector": {}}
    apply({"apiVersion": cachedmodel.API_VERSION, "kind": cachedmodel.KIND, "metadata": {"name": name}, "spec": spec})
    try:
        eventually("every node warmed", lambda: entries(name) == dict.fromkeys(nodes, "Ready"), seconds=600)
        annotations = {annotation.MODEL_ANNOTATION: CLUSTER.model, annotation.INCLUDE_ANNOTATION: ",".join(include)}
        apply(pod("first", namespace, annotations, container=serving_container(CLUSTER.model)))
        (first,) = wait_for_pods(namespace, "e2e=first", 1, ready=True)
        assert fetcher_state(first)[2].startswith("cache hit"), fetcher_state(first)  # its node had it already
    finally:
        kubectl("delete", f"cachedmodel/{name}", "--wait=false", check=False)
