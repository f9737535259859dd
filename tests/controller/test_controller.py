"""The controller's loop against the Kubernetes API stand-in: lease, cache volumes, certificates, status.

The stand-in validates every object against the 1.30 schema and answers like the apiserver (conflicts,
404s, patch content types). The test plays the cluster's own controllers where needed (binding a PVC).
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from certs.authority import KeyPair, create_ca, issue_serving_cert, service_dns_names, write_tls_dir
from certs.rotation import signed_by
from devtools.faultproxy import FaultProxy, Rule
from devtools.kubeapi import KubeApi, grants_of
from devtools.webhook_process import RunningWebhook, run_webhook
from modelcache.contract.volumes import STATUS_CONFIGMAP, STATUS_KEY, VolumeStatus
from modelcache.controller.__main__ import Controller
from modelcache.controller.config import ControllerSettings
from modelcache.controller.volumes import clone_volume_name
from tests.helpers import run_pass
from tests.manifests.rendering import render

NS = "modelcache-system"


@pytest.fixture
def api() -> Iterator[KubeApi]:
    """The stand-in, enforcing the RBAC that manifests/ grants the controller."""
    grants = grants_of(render("base"), service_account="modelcache-controller", namespace=NS)
    with KubeApi(token="controller", grants={"controller": grants}) as server:
        server.create(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "nfs-client"},
                "provisioner": "cluster.local/nfs-subdir-external-provisioner",
            }
        )
        server.create(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "modelcache-webhook"},
                "webhooks": [
                    {
                        "name": "inject.modelcache.io",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "clientConfig": {"service": {"name": "modelcache-webhook", "namespace": NS, "path": "/mutate"}},
                    }
                ],
            }
        )
        yield server


def model_pod(api: KubeApi, namespace: str, name: str = "llm-0") -> None:
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"modelcache.io/model-key": "org-m-1234"}},
            "spec": {"containers": [{"name": "app", "image": "vllm/vllm-openai:v0.11.0"}]},
        }
    )


def controller(api: KubeApi, identity: str = "replica-a", **overrides: Any) -> Controller:
    settings = ControllerSettings(identity=identity, **overrides)
    return Controller(api.client(), settings)


@pytest.fixture(autouse=True)
def _nothing_forbidden(api: KubeApi) -> Iterator[None]:
    """Every scenario must work within the controller's RBAC: a refusal fails the test."""
    yield
    assert api.forbidden == []


def leads(replica: Controller) -> bool:
    return replica.elector.is_leader


def status(api: KubeApi) -> VolumeStatus:
    configmap = api.get("ConfigMap", STATUS_CONFIGMAP, NS)
    assert configmap is not None
    return VolumeStatus.from_json(configmap["data"][STATUS_KEY])


def bind(api: KubeApi, namespace: str, volume: str) -> None:
    api.set_status("PersistentVolumeClaim", "modelcache", {"phase": "Bound"}, namespace=namespace, volumeName=volume)


def wait_for(what: str, condition: Callable[[], object], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_only_the_lease_holder_acts_and_a_released_lease_passes_at_once(api: KubeApi) -> None:
    model_pod(api, "team-a")
    first = controller(api, "replica-a", volume_mode="provision", storage_class="nfs-client", manage_certificates=False)
    second = controller(
        api, "replica-b", volume_mode="provision", storage_class="nfs-client", manage_certificates=False
    )
    now = datetime.now(UTC)
    run_pass(first, now)
    writes = [r for r in api.requests if r[0] in ("POST", "PUT", "PATCH") and "leases" not in r[1]]
    assert writes  # the leader created the PVC and the status
    run_pass(second, now)
    assert [r for r in api.requests if r[0] in ("POST", "PUT", "PATCH") and "leases" not in r[1]] == writes
    assert (leads(first), leads(second)) == (True, False)
    lease = api.get("Lease", "modelcache-controller", NS)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == first.elector.identity
    assert first.elector.identity.startswith("replica-a_")
    first.elector.release()
    run_pass(second, now)
    assert leads(second)


def test_a_lease_whose_record_stops_changing_is_taken_over_and_the_old_holder_stands_down(api: KubeApi) -> None:
    """Time here is each replica's own monotonic clock; the holder's renewTime is never compared with it."""
    first = controller(api, "replica-a", manage_certificates=False)
    second = controller(api, "replica-b", manage_certificates=False)
    clock = {"a": 0.0, "b": 0.0}
    for name, replica in (("a", first), ("b", second)):
        replica.elector._clock = lambda name=name: clock[name]  # type: ignore[misc]
    assert first.elector.try_acquire_or_renew()
    clock["b"] = 5.0
    assert not second.elector.try_acquire_or_renew()  # second sees the record now: valid for 15 s of its time
    clock["b"] = 19.0
    assert not second.elector.try_acquire_or_renew()
    clock["a"] = 11.0  # first could not renew for longer than its renew deadline: it stops acting
    assert not leads(first)
    first.step(datetime.now(UTC))  # a pass of its loop while its renewals fail: it does nothing
    assert [r for r in api.requests if r[0] in ("POST", "PUT", "PATCH") and "leases" not in r[1]] == []
    clock["b"] = 20.5  # the record has not changed for a whole lease of second's time
    assert second.elector.try_acquire_or_renew()
    assert leads(second)
    clock["a"] = 21.0
    assert not first.elector.try_acquire_or_renew()  # the new holder's record is fresh to first


def test_clone_mode_from_first_pod_to_a_ready_namespace(api: KubeApi) -> None:
    loop = controller(api, volume_mode="clone", storage_class="nfs-client", manage_certificates=False)
    model_pod(api, "team-a")
    run_pass(loop, datetime.now(UTC))
    shared = api.get("PersistentVolumeClaim", "modelcache", NS)
    assert shared is not None
    assert shared["spec"]["storageClassName"] == "nfs-client"
    assert status(api).namespaces["team-a"].state == "pending"
    # The cluster's provisioner binds the shared PVC to an NFS volume.
    api.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "pvc-7f3a"},
            "spec": {
                "capacity": {"storage": "100Gi"},
                "accessModes": ["ReadWriteMany"],
                "nfs": {"server": "10.0.0.5", "path": "/exports/modelcache"},
                "storageClassName": "nfs-client",
                "persistentVolumeReclaimPolicy": "Delete",
            },
        }
    )
    bind(api, NS, "pvc-7f3a")
    loop.wake.set()
    run_pass(loop, datetime.now(UTC))
    copy_name = clone_volume_name("modelcache", "team-a")
    copy = api.get("PersistentVolume", copy_name)
    claim = api.get("PersistentVolumeClaim", "modelcache", "team-a")
    assert copy is not None
    assert claim is not None
    assert copy["spec"]["nfs"] == {"server": "10.0.0.5", "path": "/exports/modelcache"}
    assert claim["spec"]["volumeName"] == copy_name
    bind(api, "team-a", copy_name)
    loop.wake.set()
    run_pass(loop, datetime.now(UTC))
    assert status(api).claim_for("team-a", now=datetime.now(UTC)) == "modelcache"
    # The namespace goes away: its PVC with it; the copy is Released and removed, the NFS files untouched.
    api.delete("PersistentVolumeClaim", "modelcache", "team-a")
    api.delete("Pod", "llm-0", "team-a")
    api.set_status("PersistentVolume", copy_name, {"phase": "Released"})
    loop.wake.set()
    run_pass(loop, datetime.now(UTC))
    assert api.get("PersistentVolume", copy_name) is None
    assert api.get("PersistentVolume", "pvc-7f3a") is not None


def test_a_new_model_pod_wakes_the_running_controller(api: KubeApi) -> None:
    # Resync in an hour: only the pod watch can make it act in time.
    loop = controller(
        api,
        volume_mode="provision",
        storage_class="nfs-client",
        manage_certificates=False,
        resync_every=timedelta(hours=1),
    )
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for("the first pass", lambda: api.get("ConfigMap", STATUS_CONFIGMAP, NS))
        model_pod(api, "team-b")
        wait_for("the PVC in team-b", lambda: api.get("PersistentVolumeClaim", "modelcache", "team-b"))
    finally:
        stop.set()
        loop.wake.set()
        runner.join(timeout=30)
    lease = api.get("Lease", "modelcache-controller", NS)
    assert lease is not None
    assert lease["spec"].get("holderIdentity") is None


def served_certificates(api: KubeApi) -> tuple[x509.Certificate, list[x509.Certificate]]:
    secret = api.get("Secret", "modelcache-webhook-tls", NS)
    configuration = api.get("MutatingWebhookConfiguration", "modelcache-webhook")
    assert secret is not None
    assert configuration is not None
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    bundle = base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"])
    return serving, x509.load_pem_x509_certificates(bundle)


def trusted(serving: x509.Certificate, bundle: list[x509.Certificate]) -> bool:
    for ca in bundle:
        try:
            serving.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue  # signed by another CA of the bundle
        return True
    return False


def test_certificates_are_issued_published_and_rotated_with_an_overlap(api: KubeApi) -> None:
    loop = controller(api)
    start = datetime.now(UTC)
    run_pass(loop, start)
    serving, bundle = served_certificates(api)
    assert trusted(serving, bundle)
    assert "modelcache-webhook.modelcache-system.svc" in serving.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    ca_secret = api.get("Secret", "modelcache-ca", NS)
    tls_secret = api.get("Secret", "modelcache-webhook-tls", NS)
    assert ca_secret is not None
    assert tls_secret is not None
    assert "ca.key" in ca_secret["data"]
    assert "ca.key" not in tls_secret["data"]
    assert tls_secret["type"] == "kubernetes.io/tls"

    def secret_writes() -> int:
        return len([r for r in api.requests if r[0] != "GET" and ("secrets" in r[1] or "webhookconfig" in r[1])])

    writes = secret_writes()
    loop._next_certificates = start
    run_pass(loop, start + timedelta(seconds=1))
    assert secret_writes() == writes  # nothing due: nothing written
    # Four years on the CA is due: a new CA joins the bundle, serving stays on the old one.
    later = start + timedelta(days=4 * 365)
    loop._next_certificates = later
    run_pass(loop, later)
    serving_1, bundle_1 = served_certificates(api)
    assert len(bundle_1) == 2
    assert trusted(serving_1, bundle_1)
    assert serving_1 == serving
    # A restart right away must not move the serving certificate before the overlap has passed.
    loop._next_certificates = later
    run_pass(loop, later + timedelta(seconds=30))
    assert served_certificates(api)[0] == serving
    # After the overlap, serving moves to the new CA; both CAs stay published while the old one is valid.
    loop._next_certificates = later
    run_pass(loop, later + timedelta(minutes=10))
    serving_2, bundle_2 = served_certificates(api)
    assert serving_2 != serving
    assert trusted(serving_2, [bundle_2[0]])
    assert len(bundle_2) == 2


def woken_pass(loop: Controller) -> None:
    """A pass right after a watch event (a PVC or PV changed)."""
    loop.wake.set()
    run_pass(loop, datetime.now(UTC))


def provisioned_volume(api: KubeApi, name: str, path: str) -> None:
    """What an NFS provisioner makes for the shared PVC: its class's reclaim policy, Delete."""
    api.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "100Gi"},
                "accessModes": ["ReadWriteMany"],
                "nfs": {"server": "10.0.0.5", "path": path},
                "storageClassName": "nfs-client",
                "persistentVolumeReclaimPolicy": "Delete",
            },
        }
    )


def bind_shared(api: KubeApi, volume: str) -> None:
    """The PV controller binds the shared PVC and the volume to each other."""
    shared = api.get("PersistentVolumeClaim", "modelcache", NS)
    assert shared is not None
    bind(api, NS, volume)
    reference = {
        "kind": "PersistentVolumeClaim",
        "namespace": NS,
        "name": "modelcache",
        "uid": shared["metadata"]["uid"],
    }
    api.set_status("PersistentVolume", volume, {"phase": "Bound"}, claimRef=reference)


def uninstall(api: KubeApi, volume: str) -> None:
    """`kubectl delete -k` deletes the namespace, and its PVC; the PV controller applies the reclaim policy."""
    api.delete("PersistentVolumeClaim", "modelcache", NS)
    pv = api.get("PersistentVolume", volume)
    assert pv is not None
    if pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete":
        api.delete("PersistentVolume", volume)  # and the provisioner deletes the files
    else:
        api.set_status("PersistentVolume", volume, {"phase": "Released"})


def ready_namespace(api: KubeApi, loop: Controller, namespace: str) -> None:
    woken_pass(loop)
    copy = clone_volume_name("modelcache", namespace)
    bind(api, namespace, copy)
    api.set_status("PersistentVolume", copy, {"phase": "Bound"})
    woken_pass(loop)
    assert status(api).namespaces[namespace].state == "ready"


def test_an_uninstall_keeps_the_cached_files_and_a_reinstall_serves_them_again(api: KubeApi) -> None:
    first = controller(api, volume_mode="clone", storage_class="nfs-client", manage_certificates=False)
    model_pod(api, "team-a")
    woken_pass(first)
    provisioned_volume(api, "pvc-7f3a", "/exports/modelcache-pvc-7f3a")
    bind_shared(api, "pvc-7f3a")
    woken_pass(first)
    shared = api.get("PersistentVolume", "pvc-7f3a")
    assert shared is not None
    assert shared["spec"]["persistentVolumeReclaimPolicy"] == "Retain"  # deleting the PVC keeps the files
    ready_namespace(api, first, "team-a")
    first.elector.release()

    uninstall(api, "pvc-7f3a")
    assert api.get("PersistentVolume", "pvc-7f3a") is not None

    again = controller(
        api, identity="reinstalled", volume_mode="clone", storage_class="nfs-client", manage_certificates=False
    )
    woken_pass(again)
    claim = api.get("PersistentVolumeClaim", "modelcache", NS)
    assert claim is not None
    assert claim["spec"]["volumeName"] == "pvc-7f3a"  # the same files, not a new empty volume
    volume = api.get("PersistentVolume", "pvc-7f3a")
    assert volume is not None
    assert "uid" not in volume["spec"]["claimRef"]  # free for the new PVC
    bind_shared(api, "pvc-7f3a")
    woken_pass(again)
    assert status(api).namespaces["team-a"].state == "ready"  # its copy still points at the same files
    model_pod(api, "team-b")
    ready_namespace(api, again, "team-b")
    copy = api.get("PersistentVolume", clone_volume_name("modelcache", "team-b"))
    assert copy is not None
    assert copy["spec"]["nfs"]["path"] == "/exports/modelcache-pvc-7f3a"


def test_a_namespace_whose_copy_lost_its_shared_volume_is_reported_not_ready(api: KubeApi) -> None:
    """What an uninstall of an earlier version left: the shared volume deleted, the copies still Bound."""
    first = controller(api, volume_mode="clone", storage_class="nfs-client", manage_certificates=False)
    model_pod(api, "team-a")
    woken_pass(first)
    provisioned_volume(api, "pvc-old", "/exports/modelcache-pvc-old")
    bind_shared(api, "pvc-old")
    ready_namespace(api, first, "team-a")
    first.elector.release()
    api.delete("PersistentVolumeClaim", "modelcache", NS)
    api.delete("PersistentVolume", "pvc-old")  # as the Delete policy did before the controller retained it
    again = controller(
        api, identity="reinstalled", volume_mode="clone", storage_class="nfs-client", manage_certificates=False
    )
    woken_pass(again)
    provisioned_volume(api, "pvc-new", "/exports/modelcache-pvc-new")
    bind_shared(api, "pvc-new")
    woken_pass(again)
    entry = status(api).namespaces["team-a"]
    assert entry.state == "error"
    assert "pvc-old" in entry.message
    assert "kubectl -n team-a delete pvc modelcache" in entry.message


def test_the_status_document_is_what_the_webhook_reads(api: KubeApi) -> None:
    loop = controller(api, volume_mode="existing", manage_certificates=False)
    model_pod(api, "team-a")
    run_pass(loop, datetime.now(UTC))
    document = json.loads(api.get("ConfigMap", STATUS_CONFIGMAP, NS)["data"][STATUS_KEY])  # type: ignore[index]
    assert document["mode"] == "existing"
    assert document["claim"] == "modelcache"


def test_an_operators_new_pvc_is_reported_ready_without_waiting_for_the_resync(api: KubeApi) -> None:
    loop = controller(api, volume_mode="existing", manage_certificates=False, resync_every=timedelta(hours=1))
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for("the first pass", lambda: api.get("ConfigMap", STATUS_CONFIGMAP, NS))
        api.create(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "modelcache", "namespace": "team-c"},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}},
            }
        )
        bind(api, "team-c", "pv-team-c")
        wait_for(
            "team-c ready",
            lambda: "team-c" in status(api).namespaces and status(api).namespaces["team-c"].state == "ready",
        )
    finally:
        stop.set()
        loop.wake.set()
        runner.join(timeout=30)


def served_by_webhook(webhook: RunningWebhook, bundle: bytes) -> x509.Certificate | None:
    """The certificate the running webhook presents to a client that trusts only `bundle`; None if refused."""
    context = ssl.create_default_context(cadata=bundle.decode())
    try:
        with (
            socket.create_connection(("127.0.0.1", int(webhook.url.rsplit(":", 1)[1])), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=f"modelcache-webhook.{NS}.svc") as tls,  # as the apiserver dials
        ):
            der = tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


def test_the_real_webhook_serves_the_rotated_certificates_verified_by_the_published_bundle(
    api: KubeApi, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    dns = service_dns_names("modelcache-webhook", NS)
    old_ca = create_ca(now=now - timedelta(days=int(3.5 * 365)))  # due: less than a third of its life left
    old_serving = issue_serving_cert(old_ca, dns, now=now)
    store_certificates(api, old_ca, old_serving, bundle=old_ca.cert_pem)
    loop = controller(api, service_name="modelcache-webhook")
    env = {"MODELCACHE_TLS_RELOAD_SECONDS": "0.2"}
    with run_webhook(tmp_path, env=env, log_file=tmp_path / "webhook.log") as webhook:
        mount_tls_secret(api, webhook)  # what the kubelet does with the Secret volume
        wait_for("the stored certificate served", lambda: served_by_webhook(webhook, old_ca.cert_pem))
        run_pass(loop, now)  # step 1: a new CA joins the published bundle; serving stays
        _, bundle = served_certificates(api)
        assert len(bundle) == 2
        published = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in bundle)
        assert served_by_webhook(webhook, published) == old_serving.certificate
        loop._next_certificates = now
        run_pass(loop, now + timedelta(minutes=10))  # step 2: serving moves to the new CA
        new_serving, bundle = served_certificates(api)
        assert signed_by(new_serving, bundle[0])
        mount_tls_secret(api, webhook)
        wait_for("the new certificate served", lambda: served_by_webhook(webhook, published) == new_serving)
        assert served_by_webhook(webhook, old_ca.cert_pem) is None  # the old CA alone no longer verifies it


def store_certificates(api: KubeApi, ca: KeyPair, serving: KeyPair, *, bundle: bytes) -> None:
    def encoded(data: dict[str, bytes]) -> dict[str, str]:
        return {key: base64.b64encode(value).decode() for key, value in data.items()}

    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "modelcache-ca", "namespace": NS},
            "data": encoded({"ca.crt": ca.cert_pem, "ca.key": ca.key_pem}),
        }
    )
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "modelcache-webhook-tls", "namespace": NS},
            "data": encoded({"tls.crt": serving.cert_pem, "tls.key": serving.key_pem, "ca.crt": bundle}),
        }
    )


def mount_tls_secret(api: KubeApi, webhook: RunningWebhook) -> None:
    secret = api.get("Secret", "modelcache-webhook-tls", NS)
    assert secret is not None
    data = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    write_tls_dir(webhook.tls_dir, KeyPair(data["tls.crt"], data["tls.key"]), KeyPair(data["ca.crt"]))


def test_a_namespace_whose_pvc_is_refused_reports_why_and_the_others_are_served(api: KubeApi) -> None:
    quota = (
        'persistentvolumeclaims "modelcache" is forbidden: exceeded quota: storage, requested: '
        "requests.storage=100Gi, used: requests.storage=0, limited: requests.storage=10Gi"
    )
    api.refuse_creates["PersistentVolumeClaim", "team-quota"] = quota
    model_pod(api, "team-quota")
    model_pod(api, "team-ok")
    run_pass(
        controller(api, volume_mode="provision", storage_class="nfs-client", manage_certificates=False),
        datetime.now(UTC),
    )
    assert api.get("PersistentVolumeClaim", "modelcache", "team-ok") is not None
    entry = status(api).namespaces["team-quota"]
    assert entry.state == "error"
    assert "exceeded quota: storage" in entry.message  # the webhook denies new pods there with this message
    assert status(api).namespaces["team-ok"].state == "pending"


def through(proxy: FaultProxy, **overrides: Any) -> Controller:
    """A controller whose every API call goes through a fault-injecting proxy in front of the stand-in."""
    from modelcache.runtime.kube import Kube

    settings = ControllerSettings(identity="replica-a", **overrides)
    return Controller(Kube.at(proxy.url, token="controller"), settings)


def test_an_api_error_in_a_pass_is_logged_and_the_pass_is_retried_soon(
    api: KubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    model_pod(api, "team-a")
    with FaultProxy(api.url).running() as proxy:
        loop = through(proxy, volume_mode="provision", storage_class="nfs-client", manage_certificates=False)
        proxy.rules.append(Rule("GET", "/persistentvolumeclaims", times=1, status=500, body=b'{"kind":"Status"}'))
        now = datetime.now(UTC)
        with caplog.at_level(logging.ERROR, logger="controller"):
            run_pass(loop, now)
        assert any("volumes:" in r.getMessage() and "retrying in 5 s" in r.getMessage() for r in caplog.records)
        assert api.get("ConfigMap", STATUS_CONFIGMAP, NS) is None  # nothing half-published
        run_pass(loop, now + timedelta(seconds=2))
        assert api.get("PersistentVolumeClaim", "modelcache", "team-a") is None  # not before the retry time
        run_pass(loop, now + timedelta(seconds=6))
    assert api.get("PersistentVolumeClaim", "modelcache", "team-a") is not None
    assert status(api).namespaces["team-a"].state == "pending"


def test_without_the_webhook_configuration_certificates_are_retried_a_minute_later(
    api: KubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    api.delete("MutatingWebhookConfiguration", "modelcache-webhook")
    loop = controller(api)
    now = datetime.now(UTC)

    def asked() -> int:
        return sum(1 for method, path in api.requests if "mutatingwebhookconfigurations" in path and method == "GET")

    with caplog.at_level(logging.ERROR, logger="controller"):
        run_pass(loop, now)
    assert asked() == 1
    assert any("install the manifests" in r.getMessage() for r in caplog.records)
    run_pass(loop, now + timedelta(seconds=30))
    assert asked() == 1
    run_pass(loop, now + timedelta(seconds=61))
    assert asked() == 2


def test_a_watch_that_fails_is_started_again_and_still_wakes_the_controller(api: KubeApi) -> None:
    with FaultProxy(api.url).running() as proxy:
        proxy.rules.append(Rule("GET", "/pods", times=1, status=500, body=b"{}", without="fieldSelector"))
        loop = through(
            proxy,
            volume_mode="provision",
            storage_class="nfs-client",
            manage_certificates=False,
            resync_every=timedelta(hours=1),  # only the watch can make it act in time
        )
        stop = threading.Event()
        runner = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        runner.start()
        try:
            wait_for("the first pass", lambda: api.get("ConfigMap", STATUS_CONFIGMAP, NS))
            wait_for("the failed watch started again", lambda: proxy.count("GET", "/pods") >= 3, seconds=20)
            model_pod(api, "team-c")
            wait_for("the PVC in team-c", lambda: api.get("PersistentVolumeClaim", "modelcache", "team-c"), 20)
        finally:
            stop.set()
            loop.wake.set()
            runner.join(timeout=30)
