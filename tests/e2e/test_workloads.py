"""On a real cluster, what users do: a Deployment whose replicas share one download and load the model
offline by repo id; a second namespace on a shared cache; the opt-out; a pod deleted mid-download.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import (
    CLUSTER,
    apply,
    eventually,
    fetcher_state,
    kubectl,
    kubectl_json,
    new_namespace,
    wait_for_pods,
)
from tests.e2e.workloads import deployment, pod, serving_container


def fetch_summaries(pods: list[dict[str, Any]]) -> list[str]:
    return [fetcher_state(item)[2] for item in pods]


def test_a_deployment_shares_one_download_and_loads_the_model_offline_by_repo_id(namespace: str) -> None:
    apply(deployment("llm", namespace, CLUSTER.model, replicas=3))
    ready = wait_for_pods(namespace, "app=llm", 3, ready=True)
    summaries = fetch_summaries(ready)
    assert sum(s.startswith("downloaded") for s in summaries) <= 1, summaries  # one copy, however many start
    assert all(s.startswith(("downloaded", "ready after waiting", "cache hit")) for s in summaries), summaries
    logs = kubectl("-n", namespace, "logs", ready[0]["metadata"]["name"], "-c", "app").stdout
    assert "loaded" in logs


def test_a_second_namespace_on_the_shared_cache_is_a_cache_hit(namespace: str) -> None:
    if not CLUSTER.shared and not CLUSTER.node_local:
        pytest.skip("every namespace has its own cache here: run with MODELCACHE_E2E_OVERLAY=overlays/nfs")
    apply(pod("first", namespace, {"modelcache.io/model": CLUSTER.model}, container=serving_container(CLUSTER.model)))
    (first,) = wait_for_pods(namespace, "e2e=first", 1, ready=True)
    other = new_namespace("modelcache-e2e-second")
    try:
        served = pod(
            "second", other, {"modelcache.io/model": CLUSTER.model}, container=serving_container(CLUSTER.model)
        )
        if CLUSTER.node_local:  # every namespace shares its node's copy: the same node, then
            served["spec"]["nodeName"] = first["spec"]["nodeName"]
        apply(served)
        (second,) = wait_for_pods(other, "e2e=second", 1, ready=True)
        assert fetcher_state(second)[2].startswith("cache hit"), fetcher_state(second)
    finally:
        kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_a_container_that_opts_out_gets_pod_local_storage_and_still_works(namespace: str) -> None:
    app = serving_container(CLUSTER.model)
    app["env"] = [{"name": "AIOLI_DISABLE_MODEL_CACHE", "value": "true"}]
    apply(pod("alone", namespace, {"modelcache.io/model": CLUSTER.model}, container=app))
    (alone,) = wait_for_pods(namespace, "e2e=alone", 1, ready=True)
    volumes = {v["name"]: v for v in alone["spec"]["volumes"]}
    assert "emptyDir" in volumes["modelcache"]  # not the shared PVC
    assert fetcher_state(alone)[2].startswith("downloaded")


def test_a_pod_deleted_during_its_download_goes_at_once_and_the_next_resumes(namespace: str) -> None:
    if not CLUSTER.big_model:
        pytest.skip("set MODELCACHE_E2E_BIG_MODEL to a model that takes ~10 s or more to download")
    annotations = {"modelcache.io/model": CLUSTER.big_model}
    apply(pod("deleted", namespace, annotations))
    eventually(
        "the download under way",
        lambda: fetcher_state(kubectl_json("-n", namespace, "get", "pod", "deleted"))[0] == "running",
        seconds=300,
        every=0.5,
    )
    time.sleep(3)  # a few seconds into the download
    started = time.monotonic()
    kubectl("-n", namespace, "delete", "pod", "deleted", "--wait=true", "--timeout=120s")
    seconds = time.monotonic() - started
    assert seconds < 20, f"the pod took {seconds:.0f} s to go: the fetcher did not stop on SIGTERM (grace: 30 s)"
    apply(pod("next", namespace, annotations))
    (following,) = wait_for_pods(namespace, "e2e=next", 1, ready=False, seconds=1200)
    summary = fetcher_state(following)[2]
    assert "resumed" in summary, summary
    assert "already staged" in summary, summary
