"""No admission fails through a certificate event: a deleted serving Secret, a deleted CA Secret, both.

The controller runs its passes against the API stand-in; the real webhook process serves from its TLS
directory, which the test refreshes from the Secret only when "the kubelet" delivers it: after the
controller's pass, never at once (13 to 50 s on a real cluster). At every moment, the certificate the
webhook serves must verify against the caBundle the apiserver has at that moment.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.rotation import signed_by
from devtools.kubeapi import KubeApi
from devtools.webhook_process import RunningWebhook, run_webhook
from tests.controller.test_controller import NS, controller, mount_tls_secret, served_by_webhook, wait_for
from tests.helpers import run_pass

TLS, CA = "modelcache-webhook-tls", "modelcache-ca"


def published(api: KubeApi) -> bytes:
    """The caBundle the apiserver verifies the webhook with."""
    configuration = api.get("MutatingWebhookConfiguration", "modelcache-webhook")
    assert configuration is not None
    return base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"])


def stored(api: KubeApi, name: str, key: str) -> x509.Certificate:
    secret = api.get("Secret", name, NS)
    assert secret is not None
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"][key]))


def admits(webhook: RunningWebhook, api: KubeApi) -> x509.Certificate:
    """What the apiserver would see now: the served certificate, verified with the published bundle."""
    served = served_by_webhook(webhook, published(api))
    assert served is not None, "the apiserver would refuse this webhook: x509: certificate signed by unknown authority"
    return served


@pytest.mark.parametrize("deleted", [(TLS,), (CA,), (CA, TLS)], ids=["serving Secret", "CA Secret", "both"])
def test_deleting_a_certificate_secret_fails_no_admission(api: KubeApi, tmp_path: Path, deleted: tuple[str]) -> None:
    now = datetime.now(UTC)
    loop = controller(api, service_name="modelcache-webhook")
    run_pass(loop, now)  # the first install
    first_ca = stored(api, CA, "ca.crt")
    with run_webhook(tmp_path, env={"MODELCACHE_TLS_RELOAD_SECONDS": "0.2"}) as webhook:
        mount_tls_secret(api, webhook)
        wait_for("the first certificate served", lambda: served_by_webhook(webhook, published(api)))
        for name in deleted:
            api.delete("Secret", name, NS)
        # The controller's next passes: at once, then after the overlap a new CA must have been published.
        for offset in (timedelta(seconds=1), timedelta(minutes=10), timedelta(minutes=20)):
            loop._next_certificates = now + offset
            run_pass(loop, now + offset)
            admits(webhook, api)  # before the kubelet delivers the new Secret
            mount_tls_secret(api, webhook)
            expected = stored(api, TLS, "tls.crt")
            wait_for("the delivered certificate served", lambda e=expected: admits(webhook, api) == e)  # type: ignore[misc]
    ca = stored(api, CA, "ca.crt")
    assert signed_by(stored(api, TLS, "tls.crt"), ca)  # in the end, served from the CA the Secret holds
    if CA not in deleted:
        assert ca == first_ca  # the serving certificate was re-issued from the CA that was there


def test_a_deleted_serving_secret_is_reissued_from_the_existing_ca_in_one_pass(api: KubeApi) -> None:
    now = datetime.now(UTC)
    loop = controller(api, service_name="modelcache-webhook")
    run_pass(loop, now)
    ca, bundle = stored(api, CA, "ca.crt"), published(api)
    api.delete("Secret", TLS, NS)
    loop._next_certificates = now
    run_pass(loop, now + timedelta(seconds=1))
    assert stored(api, CA, "ca.crt") == ca
    assert published(api) == bundle  # the bundle did not change: nothing for the apiserver to catch up on
    assert signed_by(stored(api, TLS, "tls.crt"), ca)


def test_an_old_ca_the_operator_removed_from_the_bundle_stays_removed(api: KubeApi) -> None:
    """operations.md: after a forced CA rotation, the old CA can be dropped by hand before it expires."""
    now = datetime.now(UTC)
    loop = controller(api, service_name="modelcache-webhook")
    run_pass(loop, now)
    api.delete("Secret", CA, NS)
    for offset in (timedelta(seconds=1), timedelta(minutes=10)):
        loop._next_certificates = now + offset
        run_pass(loop, now + offset)
    new_ca = stored(api, CA, "ca.crt")
    assert len(x509.load_pem_x509_certificates(published(api))) == 2
    assert signed_by(stored(api, TLS, "tls.crt"), new_ca)
    configuration = api.get("MutatingWebhookConfiguration", "modelcache-webhook")
    assert configuration is not None
    only_new = base64.b64encode(new_ca.public_bytes(serialization.Encoding.PEM)).decode()
    configuration["webhooks"][0]["clientConfig"]["caBundle"] = only_new  # what `kubectl edit` does
    api.delete("MutatingWebhookConfiguration", "modelcache-webhook")
    api.create({k: v for k, v in configuration.items() if k != "status"})
    loop._next_certificates = now + timedelta(minutes=20)
    run_pass(loop, now + timedelta(minutes=20))
    assert x509.load_pem_x509_certificates(published(api)) == [new_ca]
