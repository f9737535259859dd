"""Cache volumes end to end without a cluster: the real webhook process reads the volume status that the
real controller loop publishes through the Kubernetes API stand-in, and admits or denies pods by it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devtools.admission import admission_review
from devtools.kubeapi import KubeApi, grants_of
from devtools.webhook_process import RunningWebhook, run_webhook
from modelcache.controller.__main__ import Controller
from modelcache.controller.config import ControllerSettings
from tests.helpers import run_pass
from tests.manifests.rendering import render
from webhook.review import decode_patch

NS = "modelcache-system"
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "llm-", "annotations": {"modelcache.io/model": "hf://org/model@main"}},
    "spec": {"containers": [{"name": "app", "image": "vllm/vllm-openai:v0.11.0"}]},
}
OPTED_OUT = json.loads(json.dumps(POD))
OPTED_OUT["spec"]["containers"][0]["env"] = [{"name": "AIOLI_DISABLE_MODEL_CACHE", "value": "true"}]


@pytest.fixture
def api() -> Iterator[KubeApi]:
    """The stand-in, enforcing what manifests/ grants the webhook and the controller."""
    rendered = render("base")
    grants = {
        name: grants_of(rendered, service_account=f"modelcache-{name}", namespace=NS)
        for name in ("webhook", "controller")
    }
    with KubeApi(token="controller", grants=grants) as server:
        yield server
        assert server.forbidden == []


def watching_env(api: KubeApi, directory: Path, *, token: str) -> dict[str, str]:
    """Settings that make the webhook watch the volume status through the stand-in with `token`."""
    token_file = directory / "token"
    token_file.write_text(token)
    return {
        "MODELCACHE_VOLUME_STATUS": f"{NS}/modelcache-volumes",
        "MODELCACHE_KUBE_API_URL": api.url,
        "MODELCACHE_KUBE_TOKEN_FILE": str(token_file),
    }


def storage_class(name: str, provisioner: str) -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": provisioner,
    }


@pytest.fixture
def webhook(api: KubeApi, tmp_path: Path) -> Iterator[RunningWebhook]:
    env = watching_env(api, tmp_path, token="webhook")
    with run_webhook(tmp_path, env=env, log_file=tmp_path / "webhook.log") as running:
        yield running


def review(webhook: RunningWebhook, pod: dict[str, Any], namespace: str) -> dict[str, Any]:
    request = urllib.request.Request(
        webhook.url + "/mutate",
        data=json.dumps(admission_review(pod, namespace)).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=webhook.client_context(), timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())["response"]
    return answer


def review_until(
    webhook: RunningWebhook, pod: dict[str, Any], namespace: str, wanted: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Review until the answer is the wanted one: the webhook sees a new status within a watch event."""
    deadline = time.monotonic() + 15
    while not wanted(answer := review(webhook, pod, namespace)):
        assert time.monotonic() < deadline, f"the webhook kept answering {answer}"
        time.sleep(0.05)
    return answer


def allowed(answer: dict[str, Any]) -> bool:
    return bool(answer["allowed"])


def denied_with(fragment: str) -> Callable[[dict[str, Any]], bool]:
    return lambda answer: not answer["allowed"] and fragment in answer["status"]["message"]


def claim_of(answer: dict[str, Any]) -> str | None:
    for op in decode_patch({"response": answer}):
        for volume in op["value"] if op["path"] == "/spec/volumes" else [op["value"]]:
            if isinstance(volume, dict) and volume.get("name") == "modelcache":
                return str(volume.get("persistentVolumeClaim", {}).get("claimName"))
    return None


def controller(api: KubeApi, **settings: Any) -> Controller:
    return Controller(api.client(), ControllerSettings(identity="test", manage_certificates=False, **settings))


def test_before_the_controller_reports_annotated_pods_are_denied_and_opted_out_pods_are_not(
    webhook: RunningWebhook,
) -> None:
    answer = review(webhook, POD, "team-a")
    assert answer["allowed"] is False
    assert "controller has not published the cache volume status" in answer["status"]["message"]
    assert review(webhook, OPTED_OUT, "team-a")["allowed"] is True


def test_existing_volumes_deny_until_the_pvc_exists_then_mount_it(api: KubeApi, webhook: RunningWebhook) -> None:
    loop = controller(api, volume_mode="existing", claim_name="models-cache")
    run_pass(loop, datetime.now(UTC))
    denial = review_until(webhook, POD, "team-a", denied_with("no PersistentVolumeClaim"))
    assert "Create a ReadWriteMany PVC named models-cache in team-a" in denial["status"]["message"]
    api.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "models-cache", "namespace": "team-a"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}},
        }
    )
    api.set_status("PersistentVolumeClaim", "models-cache", {"phase": "Bound"}, namespace="team-a", volumeName="pv-1")
    loop.wake.set()  # what the controller's PVC watch does on that change
    run_pass(loop, datetime.now(UTC))
    answer = review_until(webhook, POD, "team-a", allowed)
    assert claim_of(answer) == "models-cache"  # the claim name comes from the controller's status


def test_provision_admits_the_first_pod_of_a_namespace_and_refuses_a_storage_class_without_rwx(
    api: KubeApi, webhook: RunningWebhook
) -> None:
    api.create(storage_class("gp3", "ebs.csi.aws.com"))
    first = controller(api, volume_mode="provision", storage_class="gp3")
    run_pass(first, datetime.now(UTC))
    answer = review_until(webhook, POD, "team-a", denied_with("cannot provide ReadWriteMany"))
    assert "ebs.csi.aws.com" in answer["status"]["message"]
    api.create(storage_class("nfs-client", "cluster.local/nfs-subdir-external-provisioner"))
    first.elector.release()  # the operator fixed the setting: a controller with the new one takes over
    run_pass(controller(api, volume_mode="provision", storage_class="nfs-client"), datetime.now(UTC))
    answer = review_until(webhook, POD, "team-new", allowed)
    assert claim_of(answer) == "modelcache"


def test_the_webhook_is_not_ready_until_it_has_read_the_status(api: KubeApi, tmp_path: Path) -> None:
    env = watching_env(api, tmp_path, token="wrong-token")
    log = tmp_path / "webhook.log"
    with pytest.raises(TimeoutError), run_webhook(tmp_path, env=env, log_file=log, ready_timeout=5):
        pass  # an API that refuses our token: never ready, so no pod is ever decided without the status
    assert "401" in (tmp_path / "webhook.log").read_text()


def operator_pvc(api: KubeApi, namespace: str, *, modes: tuple[str, ...] = ("ReadWriteMany",)) -> None:
    api.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "models-cache", "namespace": namespace},
            "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": "1Ti"}}},
        }
    )


def test_existing_volumes_admit_a_pod_created_right_after_its_pvc_before_the_controller_reports(
    api: KubeApi, webhook: RunningWebhook
) -> None:
    """A pipeline creates the PVC, then a bare pod or a Job at once: no retry will come for it."""
    run_pass(controller(api, volume_mode="existing", claim_name="models-cache"), datetime.now(UTC))
    review_until(webhook, POD, "team-a", denied_with("no PersistentVolumeClaim"))
    operator_pvc(api, "team-a")  # the controller's pass has not run since: its status still lacks team-a
    answer = review_until(webhook, POD, "team-a", allowed)
    assert claim_of(answer) == "models-cache"
    operator_pvc(api, "team-b", modes=("ReadWriteOnce",))
    denial = review_until(webhook, POD, "team-b", denied_with("must be ReadWriteMany"))
    assert "no PersistentVolumeClaim" not in denial["status"]["message"]


def test_without_its_own_view_of_the_pvcs_the_webhook_says_the_status_is_not_known_yet(tmp_path: Path) -> None:
    rendered = render("base")
    webhook_rules = grants_of(rendered, service_account="modelcache-webhook", namespace=NS)
    blind = [(scope, rule) for scope, rule in webhook_rules if "persistentvolumeclaims" not in rule["resources"]]
    grants = {
        "webhook": blind,
        "controller": grants_of(rendered, service_account="modelcache-controller", namespace=NS),
    }
    with (
        KubeApi(token="controller", grants=grants) as api,
        run_webhook(tmp_path, env=watching_env(api, tmp_path, token="webhook")) as running,
    ):
        run_pass(controller(api, volume_mode="existing", claim_name="models-cache"), datetime.now(UTC))
        answer = review_until(running, POD, "team-a", denied_with("not known yet"))
        assert "no PersistentVolumeClaim" not in answer["status"]["message"]


def test_node_local_fallback_mounts_the_operators_rwx_pvc_where_there_is_one_and_the_node_cache_elsewhere(
    api: KubeApi, webhook: RunningWebhook
) -> None:
    """A cluster without RWX storage in some namespaces: those get each node's own copy, never a denial."""
    operator_pvc(api, "shared")
    api.set_status("PersistentVolumeClaim", "models-cache", {"phase": "Bound"}, namespace="shared", volumeName="nfs")
    loop = controller(api, volume_mode="existing", claim_name="models-cache", node_local="fallback")
    run_pass(loop, datetime.now(UTC))
    assert claim_of(review_until(webhook, POD, "shared", allowed)) == "models-cache"
    answer = review_until(webhook, POD, "gpu-team", allowed)  # no PVC there, and not reported yet
    assert claim_of(answer) == "models-cache-node"
    api.create(
        {**POD, "metadata": {"name": "llm-0", "namespace": "gpu-team", "labels": {"modelcache.io/model-key": "k"}}}
    )
    loop.wake.set()
    run_pass(loop, datetime.now(UTC))
    (volume,) = [pv for pv in api.list("PersistentVolume") if pv["spec"]["claimRef"]["namespace"] == "gpu-team"]
    assert volume["spec"]["hostPath"]["path"] == "/var/lib/modelcache"
    pvc = api.get("PersistentVolumeClaim", "models-cache-node", namespace="gpu-team")
    assert pvc is not None
    assert pvc["spec"]["volumeName"] == volume["metadata"]["name"]
    status = json.loads(api.get("ConfigMap", "modelcache-volumes", namespace=NS)["data"]["status.json"])  # type: ignore[index]
    assert status["namespaces"]["gpu-team"] == {"state": "pending", "message": "creating the node-local cache PVC",
                                                "nodeLocal": True}  # fmt: skip


def test_node_local_pods_are_never_gated_and_one_that_asks_to_wait_is_told_why(
    api: KubeApi, webhook: RunningWebhook
) -> None:
    run_pass(controller(api, node_local="always"), datetime.now(UTC))
    waiting = json.loads(json.dumps(POD))
    waiting["metadata"]["annotations"]["modelcache.io/wait-for-model"] = "true"
    answer = review_until(webhook, waiting, "team-a", allowed)
    assert claim_of(answer) == "modelcache-node"
    assert all(op["path"] != "/spec/schedulingGates" for op in decode_patch({"response": answer}))
    assert any("cache is node-local" in text for text in answer.get("warnings", []))
