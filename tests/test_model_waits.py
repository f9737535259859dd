"""Pods that wait for their model, unscheduled: the real webhook process gates them (it reads the
CachedModels through its own watch), the real controller loop fetches for them with a Job, lifts the
gate once the model is Ready and tells the pods why they wait, as Events. Against the API stand-in,
which enforces what manifests/ grants the webhook and the controller."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from devtools.kubeapi import KubeApi
from devtools.webhook_process import RunningWebhook, run_webhook
from modelcache.contract import annotation, cachedmodel, keys, sources, wire
from modelcache.contract.annotation import WAIT_ANNOTATION
from modelcache.controller.__main__ import Controller
from modelcache.controller.waiting import EVENT_EVERY, Waiting, job_name
from tests.helpers import run_pass
from tests.test_cache_volumes import api, controller, review, review_until, watching_env
from webhook.review import decode_patch

__all__ = ["api"]  # the stand-in fixture, with the RBAC of manifests/base
SOURCE = "hf://org/model@main"
KEY = keys.model_key(sources.parse_source(SOURCE))
VOLUME = "serving/modelcache"
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "llm-0",
        "annotations": {"modelcache.io/model": SOURCE, "modelcache.io/wait-for-model": "true",
                        "modelcache.io/secret": "hf-token"},
    },
    "spec": {"containers": [{"name": "app", "image": "vllm/vllm-openai:v0.11.0",
                             "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
}  # fmt: skip


@pytest.fixture
def webhook(api: KubeApi, tmp_path: Path) -> Iterator[RunningWebhook]:
    env = watching_env(api, tmp_path, token="webhook")
    with run_webhook(tmp_path, env=env, log_file=tmp_path / "webhook.log") as running:
        yield running


@pytest.fixture
def serving(api: KubeApi) -> Controller:
    """Namespace serving with its cache PVC, reported by the controller (existing mode), which leads."""
    api.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "modelcache", "namespace": "serving"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}},
        }
    )
    api.set_status("PersistentVolumeClaim", "modelcache", {"phase": "Bound"}, namespace="serving", volumeName="pv-1")
    loop = controller(api, volume_mode="existing")
    run_pass(loop, datetime.now(UTC))
    return loop


def gates(answer: dict[str, Any], pod: dict[str, Any] = POD) -> list[str]:
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), decode_patch({"response": answer}))
    return [g["name"] for g in patched["spec"].get("schedulingGates", [])]


def admit(api: KubeApi, webhook: RunningWebhook, name: str, pod: dict[str, Any] = POD) -> dict[str, Any]:
    """What the apiserver does with the webhook's answer: the pod, patched, stored, Pending."""
    body = copy.deepcopy(pod)
    body["metadata"]["name"] = name
    answer = review(webhook, body, "serving")
    assert answer["allowed"], answer
    stored = jsonpatch.apply_patch(body, decode_patch({"response": answer}))
    stored["metadata"]["namespace"] = "serving"
    api.create(stored)
    api.set_status("Pod", name, {"phase": "Pending"}, namespace="serving")
    found = api.get("Pod", name, "serving")
    assert found is not None
    return found


def fetcher_status(state: dict[str, Any]) -> dict[str, Any]:
    """The kubelet's report of the pod's fetcher init container."""
    return {"name": wire.FETCHER_CONTAINER_NAME, "state": state, "ready": False, "restartCount": 0, "image": "f",
            "imageID": ""}  # fmt: skip


def events_of(api: KubeApi, pod: str) -> dict[str, dict[str, Any]]:
    return {e["reason"]: e for e in api.list("Event") if e["involvedObject"]["name"] == pod}


def model_object(api: KubeApi, phase: str, **entry: Any) -> None:
    """The CachedModel as the cache agent of serving's volume keeps it."""
    status = {
        "key": KEY,
        "phase": phase,
        "caches": [{"volume": VOLUME, "phase": phase, "updatedAt": "2026-12-01T00:00:00Z", **entry}],
    }
    existing = api.get("CachedModel", cachedmodel.name_for_key(KEY))
    if existing is None:
        api.create({"apiVersion": cachedmodel.API_VERSION, "kind": "CachedModel",
                    "metadata": {"name": cachedmodel.name_for_key(KEY)}, "spec": {"source": SOURCE}})  # fmt: skip
    api.set_status("CachedModel", cachedmodel.name_for_key(KEY), status)


def test_a_gated_pod_holds_no_node_until_its_model_is_ready_then_is_scheduled(
    api: KubeApi, webhook: RunningWebhook, serving: Controller
) -> None:
    pod = admit(api, webhook, "llm-0")
    assert [g["name"] for g in pod["spec"]["schedulingGates"]] == [wire.SCHEDULING_GATE]
    assert pod["spec"]["initContainers"][-1]["name"] == wire.FETCHER_CONTAINER_NAME  # it still pins its version

    loop = serving
    run_pass(loop, datetime.now(UTC))
    job = api.get("Job", job_name(KEY), "serving")
    assert job is not None, "nothing fetches the model for a gated pod"
    template = job["spec"]["template"]["metadata"]
    assert template["annotations"]["modelcache.io/model"] == SOURCE
    assert template["annotations"]["modelcache.io/secret"] == "hf-token"  # the same Secret keys as the pod
    assert template["annotations"][WAIT_ANNOTATION] == "false"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == pod["spec"]["initContainers"][-1]["image"]
    waiting = events_of(api, "llm-0")["WaitingForModel"]
    assert waiting["type"] == "Normal"
    assert f"not scheduled until model {SOURCE} is ready" in waiting["message"]
    # The Job's own pod is never gated: the webhook lets the fetch run.
    job_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fetch", **copy.deepcopy(template)},
               "spec": copy.deepcopy(job["spec"]["template"]["spec"])}  # fmt: skip
    assert gates(review(webhook, job_pod, "serving"), job_pod) == []

    model_object(api, "Downloading", bytesDone=1, bytesTotal=4, holder="pod serving/fetch on node n1",
                 message="downloading by pod serving/fetch on node n1: 25 % (1 B of 4 B)")  # fmt: skip
    second = review(webhook, {**POD, "metadata": {**POD["metadata"], "name": "llm-1"}}, "serving")
    assert gates(second) == [wire.SCHEDULING_GATE]  # downloading is not ready

    model_object(api, "Ready", sizeBytes=4, files=1)
    run_pass(loop, datetime.now(UTC))
    lifted = api.get("Pod", "llm-0", "serving")
    assert lifted is not None
    assert "schedulingGates" not in lifted["spec"]  # the scheduler may bind it now
    assert "is ready in cache serving/modelcache" in events_of(api, "llm-0")["ModelReady"]["message"]
    answer = review_until(webhook, {**POD, "metadata": {**POD["metadata"], "name": "llm-2"}}, "serving",
                          lambda a: gates(a) == [])  # fmt: skip
    assert answer["allowed"]


def test_a_failed_fetch_keeps_the_pods_gated_with_the_fetchers_message(
    api: KubeApi, webhook: RunningWebhook, serving: Controller
) -> None:
    admit(api, webhook, "llm-0")
    loop = serving
    run_pass(loop, datetime.now(UTC))
    message = "AccessDenied: the Hub refused the token of Secret serving/hf-token for org/model (HTTP 403)"
    fetch_pod = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "fetch-1", "namespace": "serving", "labels": {"job-name": job_name(KEY)}},
                 "spec": {"containers": [{"name": "ready", "image": "f"}]}}  # fmt: skip
    api.create(fetch_pod)
    terminated = {"terminated": {"exitCode": 12, "message": message, "reason": "Error"}}
    api.set_status("Pod", "fetch-1", {"phase": "Failed", "initContainerStatuses": [fetcher_status(terminated)]},
                   namespace="serving")  # fmt: skip
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
    api.set_status("Job", job_name(KEY), {"conditions": [failed], "failed": 4}, namespace="serving")
    run_pass(loop, datetime.now(UTC))
    pod = api.get("Pod", "llm-0", "serving")
    assert pod is not None
    assert [g["name"] for g in pod["spec"]["schedulingGates"]] == [wire.SCHEDULING_GATE]
    warning = events_of(api, "llm-0")["ModelFailed"]
    assert warning["type"] == "Warning"
    assert message in warning["message"]
    assert f"delete job/{job_name(KEY)}" in warning["message"]
    api.delete("Job", job_name(KEY), "serving")  # what the message says to do once the Secret is fixed
    run_pass(loop, datetime.now(UTC))
    assert api.get("Job", job_name(KEY), "serving") is not None  # a fresh attempt


def test_pods_in_init_are_told_who_downloads_their_model_at_a_bounded_rate(api: KubeApi) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "llm-3", "namespace": "serving", "labels": {wire.MODEL_KEY_LABEL: KEY},
                        "annotations": {"modelcache.io/model": SOURCE}},
           "spec": {"containers": [{"name": "app", "image": "a"}]}}  # fmt: skip
    api.create(pod)
    running = {"running": {"startedAt": "2026-12-01T00:00:00Z"}}
    api.set_status("Pod", "llm-3", {"phase": "Pending", "initContainerStatuses": [fetcher_status(running)]},
                   namespace="serving")  # fmt: skip
    model_object(api, "Downloading", bytesDone=1, bytesTotal=4, holder="pod serving/llm-0 on node gpu-1",
                 message="downloading by pod serving/llm-0 on node gpu-1: 25 % (1 B of 4 B)")  # fmt: skip
    waiting = Waiting(api.client("controller"), controller(api, volume_mode="existing").settings)
    assert waiting.reconcile(now=1000.0).events == 1
    event = events_of(api, "llm-3")["WaitingForModel"]
    assert "downloading into cache serving/modelcache" in event["message"]
    assert "pod serving/llm-0 on node gpu-1: 25 %" in event["message"]
    assert waiting.reconcile(now=1001.0).events == 0  # unchanged: not said again at once
    assert waiting.reconcile(now=1000.0 + EVENT_EVERY).events == 1
    assert events_of(api, "llm-3")["WaitingForModel"]["count"] == 2  # one Event, counted, as kubectl shows it


def test_the_webhook_gates_only_what_it_should() -> None:
    from webhook.config import Settings
    from webhook.errors import DenialError
    from webhook.injection import decide

    def gated(pod: dict[str, Any], *, ready: bool = False, **settings: Any) -> bool:
        decision = decide(
            pod, settings=Settings(**settings), claim_for=lambda: "modelcache", model_ready=lambda _: ready
        )
        return any(op["path"] == "/spec/schedulingGates" for op in decision.patch)

    plain = json.loads(json.dumps(POD))
    plain["metadata"]["annotations"].pop("modelcache.io/wait-for-model")
    assert gated(POD)
    assert not gated(POD, ready=True)
    assert not gated(plain)  # the cluster default is off
    assert gated(plain, wait_for_model=True)
    refusing = json.loads(json.dumps(POD))
    refusing["metadata"]["annotations"]["modelcache.io/wait-for-model"] = "false"
    assert not gated(refusing, wait_for_model=True)  # a workload may say no
    bound = json.loads(json.dumps(POD))
    bound["spec"]["nodeName"] = "gpu-1"
    assert not gated(bound)  # a pod bound already cannot take a gate
    opted_out = json.loads(json.dumps(POD))
    opted_out["spec"]["containers"][0]["env"] = [{"name": "AIOLI_DISABLE_MODEL_CACHE", "value": "true"}]
    assert not gated(opted_out)  # pod-local storage: its own init container fetches
    typo = json.loads(json.dumps(POD))
    typo["metadata"]["annotations"]["modelcache.io/wait-for-model"] = "yes please"
    with pytest.raises(DenialError) as denied:
        gated(typo)
    assert "modelcache.io/wait-for-model" in str(denied.value)
    assert '"true" or "false"' in str(denied.value)


def test_a_declared_cachedmodel_is_fetched_into_the_caches_it_names(api: KubeApi, serving: Controller) -> None:
    api.create(
        {
            "apiVersion": cachedmodel.API_VERSION,
            "kind": "CachedModel",
            "metadata": {"name": "llama"},
            "spec": {"source": SOURCE, "include": ["*.json"], "namespaces": ["serving", "team-b"], "secret": "hf"},
        }
    )
    key = keys.model_key(sources.parse_source(SOURCE), ("*.json",))
    run_pass(serving, datetime.now(UTC))
    for namespace in ("serving", "team-b"):  # existing mode: each namespace has its own volume
        job = api.get("Job", job_name(key), namespace)
        assert job is not None, namespace
        annotations = job["spec"]["template"]["metadata"]["annotations"]
        assert annotations[annotation.MODEL_ANNOTATION] == SOURCE
        assert annotations[annotation.INCLUDE_ANNOTATION] == "*.json"
        assert annotations[annotation.SECRET_ANNOTATION] == "hf"
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == serving.settings.fetcher_image
    api.delete("Job", job_name(key), "serving")  # finished and collected (ttlSecondsAfterFinished)
    caches = [{"volume": VOLUME, "phase": "Ready", "updatedAt": "2026-12-01T00:00:00Z", "sizeBytes": 1, "files": 1}]
    api.set_status("CachedModel", "llama", {"key": key, "phase": "Ready", "caches": caches})
    run_pass(serving, datetime.now(UTC))
    assert api.get("Job", job_name(key), "serving") is None  # ready there: nothing to fetch again


def test_in_clone_mode_one_job_fills_the_volume_every_namespace_shares(api: KubeApi) -> None:
    api.create(
        {
            "apiVersion": cachedmodel.API_VERSION,
            "kind": "CachedModel",
            "metadata": {"name": "llama"},
            "spec": {"source": SOURCE, "namespaces": ["serving", "team-b"]},
        }
    )
    waiting = Waiting(api.client("controller"), controller(api, volume_mode="clone", storage_class="nfs").settings)
    assert waiting.reconcile().jobs_created == [f"serving/{job_name(KEY)}"]
    assert waiting.reconcile().jobs_created == []  # it exists: not twice


def test_a_declared_cachedmodel_whose_source_is_not_one_says_so_on_itself(api: KubeApi, serving: Controller) -> None:
    api.create(
        {
            "apiVersion": cachedmodel.API_VERSION,
            "kind": "CachedModel",
            "metadata": {"name": "leaky"},
            "spec": {"source": "https://user:secret@models.example.com/m.gguf", "namespaces": ["serving"]},
        }
    )
    run_pass(serving, datetime.now(UTC))
    assert api.list("Job") == []
    (event,) = [e for e in api.list("Event") if e["involvedObject"]["name"] == "leaky"]
    assert (event["type"], event["reason"], event["metadata"]["namespace"]) == ("Warning", "InvalidSource", "default")
    assert event["involvedObject"]["kind"] == "CachedModel"
    assert "credentials in the URL" in event["message"]
    assert "secret@" not in event["message"]  # the error never echoes them


def test_the_example_cachedmodel_is_valid_and_fetched_as_it_says(api: KubeApi, serving: Controller) -> None:
    import yaml

    from tests.manifests.rendering import ROOT

    example = yaml.safe_load((ROOT / "examples" / "admin" / "cachedmodel.yaml").read_text())
    api.create(example)  # checked against the CRD's schema and rules
    run_pass(serving, datetime.now(UTC))
    key = cachedmodel.key_of(example)
    job = api.get("Job", job_name(key), "serving")
    assert job is not None
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations[annotation.SECRET_ANNOTATION] == "hf-token"
    assert annotations[annotation.MODEL_ANNOTATION] == example["spec"]["source"]


def test_node_local_namespaces_wait_on_their_nodes_and_a_declaration_makes_no_job_there(api: KubeApi) -> None:
    """Readiness is per node there: no gate holds a pod, Events name the pod's node's cache, and a Job would
    fill one node: a declared CachedModel's spec.namespaces fetch nothing in node-local namespaces."""
    loop = controller(api, node_local="always")
    gated: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "llm-9",
            "namespace": "serving",
            "labels": {wire.MODEL_KEY_LABEL: KEY},
            "annotations": {"modelcache.io/model": SOURCE},
        },
        "spec": {"schedulingGates": [{"name": wire.SCHEDULING_GATE}], "containers": [{"name": "app", "image": "a"}]},
    }
    initing = copy.deepcopy(gated)
    initing["metadata"]["name"] = "llm-3"
    initing["spec"] = {"nodeName": "gpu-1", "containers": gated["spec"]["containers"]}  # bound, in Init
    for pod in (gated, initing):
        api.create(pod)
    running = {"running": {"startedAt": "2026-12-01T00:00:00Z"}}
    api.set_status("Pod", "llm-9", {"phase": "Pending"}, namespace="serving")
    api.set_status(
        "Pod", "llm-3", {"phase": "Pending", "initContainerStatuses": [fetcher_status(running)]}, namespace="serving"
    )
    api.create(
        {
            "apiVersion": cachedmodel.API_VERSION,
            "kind": "CachedModel",
            "metadata": {"name": "llama"},
            "spec": {"source": SOURCE, "namespaces": ["serving"]},
        }
    )
    caches = [
        {
            "volume": "node:gpu-1",
            "node": "gpu-1",
            "phase": "Downloading",
            "updatedAt": "2026-12-01T00:00:00Z",
            "message": "downloading by pod serving/llm-0 on node gpu-1: 25 % (1 B of 4 B)",
        }
    ]
    api.set_status("CachedModel", "llama", {"key": KEY, "phase": "Downloading", "caches": caches})
    run_pass(loop, datetime.now(UTC))
    lifted = api.get("Pod", "llm-9", "serving")
    assert lifted is not None
    assert "schedulingGates" not in lifted["spec"]  # let go at once: it fetches on whatever node it gets
    assert "downloading into cache node:gpu-1" in events_of(api, "llm-3")["WaitingForModel"]["message"]
    assert api.list("Job") == []
