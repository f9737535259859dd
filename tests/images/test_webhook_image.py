"""The webhook image, run from the rendered manifests' own pod templates as a kubelet runs them.

Each Deployment of the nfs overlay (webhook, controller, cache agent) runs with its command, its
securityContext, its settings ConfigMap and its mounts, under an arbitrary UID, against the API
stand-in that enforces exactly the RBAC the manifests grant its service account.
"""

from __future__ import annotations

import copy
import json
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.hubserver import HubServer
from devtools.kubeapi import KubeApi, grants_of
from devtools.webhook_process import free_port, write_certificates
from tests.helpers import populate, write_kubeconfig
from tests.images.conftest import SERVED
from tests.images.kubelet import WEBHOOK, Kubelet, Running, restricted
from tests.manifests.rendering import one, render
from tests.webhook.test_golden_cases import CASE_NAMES, CASES, SETTINGS, summary

NS = "modelcache-system"
pytestmark = pytest.mark.usefixtures("images")


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render("overlays/nfs")


def deployment(objects: list[dict[str, Any]], name: str, image: str = WEBHOOK) -> dict[str, Any]:
    """The pod a Deployment's ReplicaSet creates, with the image under test."""
    template = copy.deepcopy(one(objects, "Deployment", name)["spec"]["template"])
    for container in template["spec"]["containers"]:
        container["image"] = image
    metadata = {**template["metadata"], "name": f"{name}-7d9f8-x2k4p", "namespace": NS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def settings(objects: list[dict[str, Any]], name: str, **overrides: str) -> dict[str, dict[str, str]]:
    return {name: {**one(objects, "ConfigMap", name)["data"], **overrides}}


def wait_until(what: str, check: Callable[[], bool], running: Running, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except OSError:
            pass  # not listening yet
        assert running.running(), f"{what}: the container exited\n{running.logs()}"
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s\n{running.logs()}"
        time.sleep(0.2)


def post(url: str, body: bytes, context: ssl.SSLContext) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_webhook_image_answers_every_golden_admission_review_identically(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    tls = tmp_path / "tls"
    ca_file = write_certificates(tls)
    for item in tls.iterdir():
        item.chmod(0o644)  # a Secret volume's default mode, readable by any UID
    port = free_port()
    # The golden cases' settings (tests/webhook/test_golden_cases.py): no volume status to ask.
    health = free_port()
    data = settings(
        manifests,
        "modelcache-webhook-settings",
        MODELCACHE_PORT=str(port),
        MODELCACHE_HEALTH_PORT=str(health),
        MODELCACHE_HOST="127.0.0.1",
    )
    data["modelcache-webhook-settings"]["MODELCACHE_FETCHER_IMAGE"] = SETTINGS.fetcher_image
    del data["modelcache-webhook-settings"]["MODELCACHE_VOLUME_STATUS"]
    pod = deployment(manifests, "modelcache-webhook")
    kubelet = Kubelet(pod, tmp_path, secrets={"modelcache-webhook-tls": tls}, config_maps=data)
    context = ssl.create_default_context(cafile=str(ca_file))
    url = f"https://127.0.0.1:{port}"
    with kubelet.started("webhook") as running:
        wait_until("ready", lambda: urllib.request.urlopen(url + "/readyz", context=context).status == 200, running)
        live = f"http://127.0.0.1:{health}/healthz"  # the liveness probe's port, plain HTTP
        assert urllib.request.urlopen(live, timeout=5).status == 200
        for name in CASE_NAMES:
            status, body = post(url + "/mutate", (CASES / name / "review.json").read_bytes(), context)
            assert summary(status, body) == json.loads((CASES / name / "expected.json").read_text()), name
        stopped, _ = running.stop(grace=30)
    assert stopped == 0, running.logs()


@pytest.fixture
def kube(manifests: list[dict[str, Any]], tmp_path: Path) -> Iterator[tuple[KubeApi, Callable[[str], Path]]]:
    """The stand-in with the manifests' RBAC; a kubeconfig per service account."""
    accounts = ("modelcache-controller", "modelcache-cache-agent", "modelcache-webhook")
    grants = {account: grants_of(manifests, service_account=account, namespace=NS) for account in accounts}
    with KubeApi(grants=grants) as api:
        api.create(one(manifests, "Namespace", NS))
        api.create(one(manifests, "MutatingWebhookConfiguration", "modelcache-webhook"))

        def kubeconfig(account: str) -> Path:
            path = write_kubeconfig(tmp_path / f"{account}.kubeconfig", api.url, account)
            path.chmod(0o644)
            return path

        yield api, kubeconfig
        assert api.forbidden == []


def holder(api: KubeApi, lease: str) -> str:
    found = api.get("Lease", lease, NS)
    return str((found or {}).get("spec", {}).get("holderIdentity") or "")


def test_the_controller_takes_its_lease_issues_the_certificates_and_stops_on_sigterm(
    manifests: list[dict[str, Any]], kube: tuple[KubeApi, Callable[[str], Path]], tmp_path: Path
) -> None:
    api, kubeconfig = kube
    pod = deployment(manifests, "modelcache-controller")
    data = settings(manifests, "modelcache-controller-settings")
    kubelet = Kubelet(pod, tmp_path, config_maps=data, kubeconfig=kubeconfig("modelcache-controller"))
    with kubelet.started("controller") as running:
        wait_until("the Lease", lambda: holder(api, "modelcache-controller").startswith(kubelet.name), running)
        wait_until("the serving Secret", lambda: api.get("Secret", "modelcache-webhook-tls", NS) is not None, running)
        bundle = api.get("MutatingWebhookConfiguration", "modelcache-webhook") or {}
        assert all(hook["clientConfig"].get("caBundle") for hook in bundle["webhooks"])
        health = "http://127.0.0.1:8081/healthz"
        wait_until("healthy", lambda: urllib.request.urlopen(health, timeout=5).status == 200, running)
        stopped, _ = running.stop(grace=30)
    assert stopped == 0, running.logs()
    assert holder(api, "modelcache-controller") == ""  # released on SIGTERM: the next replica leads at once


def test_the_cache_agent_takes_its_lease_and_serves_metrics_on_the_cache_volume(
    manifests: list[dict[str, Any]], kube: tuple[KubeApi, Callable[[str], Path]], tmp_path: Path
) -> None:
    api, kubeconfig = kube
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    port = free_port()
    data = settings(manifests, "modelcache-cache-agent-settings", MODELCACHE_METRICS_PORT=str(port))
    pod = deployment(manifests, "modelcache-cache-agent")
    kubelet = Kubelet(
        pod, tmp_path, claims={"modelcache": cache}, config_maps=data, kubeconfig=kubeconfig("modelcache-cache-agent")
    )
    metrics = f"http://127.0.0.1:{port}/metrics"
    with kubelet.started("agent") as running:
        wait_until("the Lease", lambda: holder(api, "modelcache-cache-agent").startswith(kubelet.name), running)
        wait_until("metrics", lambda: b"modelcache_cache_root_open" in urllib.request.urlopen(metrics).read(), running)
        stopped, _ = running.stop(grace=60)
    assert stopped == 0, running.logs()


def test_python_m_certs_cluster_creates_the_secrets_and_the_bundle_once(
    manifests: list[dict[str, Any]], kube: tuple[KubeApi, Callable[[str], Path]]
) -> None:
    """As a Job runs it, with the controller's rights (the controller runs the same reconcile)."""
    api, kubeconfig = kube
    config = kubeconfig("modelcache-controller")
    extra = ["-v", f"{config}:/kube:ro", "--env", "KUBECONFIG=/kube", "--entrypoint", "python"]
    result = restricted(WEBHOOK, "-m", "certs", "cluster", "--namespace", NS, extra=extra)
    assert result.returncode == 0, result.stderr
    assert api.get("Secret", "modelcache-ca", NS) is not None
    assert api.get("Secret", "modelcache-webhook-tls", NS) is not None


def test_a_download_command_in_the_webhook_image_names_the_image_that_runs_it(hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    populate(hub, cache, f"hf://{SERVED}")
    (weights,) = {p.resolve() for p in cache.rglob("model.safetensors")}
    weights.write_bytes(bytes(weights.stat().st_size))
    extra = ["-v", f"{cache}:/cache", "--entrypoint", "modelcache"]
    for command in (["prefetch", "hf://org/model"], ["refresh", "hf://org/model"]):
        result = restricted(WEBHOOK, "--cache", "/cache", *command, extra=extra)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "from the fetcher image" in result.stderr
    found = restricted(WEBHOOK, "--cache", "/cache", "verify", "--repair", extra=extra)
    assert found.returncode == 1, found.stdout + found.stderr  # verify ran: the damage is reported
    assert "CORRUPT" in found.stdout
    assert "from the fetcher image" in found.stdout
    assert "Traceback" not in found.stderr
