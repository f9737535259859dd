"""Certificates on a cluster: Secrets, the caBundle of the webhook configuration, rotation.

One call of :func:`reconcile_certificates` reads what is stored, asks :func:`certs.rotation.rotate` for
the next state and writes it in the order that keeps every webhook call verifiable:

1. the CA Secret (``ca.crt``, ``ca.key``; only the controller mounts or reads it);
2. the caBundle of every webhook in the MutatingWebhookConfiguration (old and new CA during overlap);
3. the serving Secret (``tls.crt``, ``tls.key``, and the bundle as ``ca.crt``) that the webhook mounts.

A serving certificate moves to a new CA only on a later call, and only once that CA has been in the
published bundle for ``min_overlap``, so a crash-looping controller cannot do both steps at once.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import replace
from datetime import datetime, timedelta

from cryptography import x509

from certs.authority import CLOCK_SKEW, KeyPair, create_ca, issue_serving_cert, service_dns_names
from certs.rotation import CertState, bundle_of, rotate, signed_by
from modelcache.contract import JsonObject
from modelcache.runtime.kube import Kube, path

log = logging.getLogger(__name__)
MIN_OVERLAP = timedelta(minutes=5)


def reconcile_certificates(
    api: Kube,
    *,
    namespace: str,
    service: str,
    tls_secret: str,
    ca_secret: str,
    webhook_configuration: str,
    now: datetime,
    min_overlap: timedelta = MIN_OVERLAP,
) -> list[str]:
    """Bring the Secrets and the caBundle up to date; returns what changed (empty when nothing did)."""
    stored_ca = api.read(path("v1", "secrets", ca_secret, namespace=namespace))
    stored_tls = api.read(path("v1", "secrets", tls_secret, namespace=namespace))
    configuration = _webhook_configuration(api, webhook_configuration)
    dns_names = service_dns_names(service, namespace)
    state = _state_of(stored_ca, stored_tls, _published(configuration), dns_names=dns_names, now=now)
    wanted = rotate(state, dns_names=dns_names, now=now)
    if _moves_too_soon(state, wanted, now=now, min_overlap=min_overlap):
        wanted = replace(wanted, serving=state.serving)
    changes = []
    ca_data = {"ca.crt": wanted.ca.cert_pem, "ca.key": wanted.ca.key_pem}
    if _write_secret(api, stored_ca, name=ca_secret, namespace=namespace, data=ca_data, kind="Opaque"):
        changes.append(f"stored a new CA in Secret {namespace}/{ca_secret}")
    if _publish_bundle(api, configuration, wanted.bundle):
        changes.append(f"published a CA bundle of {wanted.bundle.count(b'BEGIN')} into {webhook_configuration}")
    tls_data = {"tls.crt": wanted.serving.cert_pem, "tls.key": wanted.serving.key_pem, "ca.crt": wanted.bundle}
    if _write_secret(api, stored_tls, name=tls_secret, namespace=namespace, data=tls_data, kind="kubernetes.io/tls"):
        changes.append(f"stored a serving certificate in Secret {namespace}/{tls_secret}")
    for change in changes:
        log.info("certificates: %s", change)
    return changes


def _state_of(
    stored_ca: JsonObject | None,
    stored_tls: JsonObject | None,
    published: bytes,
    *,
    dns_names: list[str],
    now: datetime,
) -> CertState:
    """The stored state, with what is missing made again without breaking what the apiserver trusts.

    - No usable serving Secret: a serving certificate is issued from the stored CA; the bundle does not
      change, and the webhook pods verify with it before and after the kubelet delivers the new Secret.
    - No usable CA Secret: a new CA is made and *joins* the CAs already published, so the certificate
      the pods still serve keeps verifying; the serving certificate moves to the new CA only after it
      has been published for min_overlap (rotate, _moves_too_soon), as in a planned CA rotation.
    - Neither (a first install, or both deleted): the same, with a new serving certificate at once.
    """
    ca = _pair(stored_ca, "ca.crt", "ca.key", what="CA")
    serving = _pair(stored_tls, "tls.crt", "tls.key", what="serving")
    tls_bundle = _decoded(stored_tls).get("ca.crt", b"") if stored_tls is not None and serving is not None else b""
    if ca is None:
        ca = create_ca(now=now)
        if published or serving is not None:
            log.warning(
                "certificates: the CA Secret is missing or unusable; a new CA joins the published bundle, and "
                "the serving certificate moves to it once the overlap has passed"
            )
    if serving is None:
        serving = issue_serving_cert(ca, dns_names, now=now)
    # What the apiserver trusts now is what must stay trusted; the serving Secret's copy of the bundle
    # counts only when nothing is published (a webhook configuration installed again, without one).
    certificates = [*_certificates(published or tls_bundle), ca.certificate]
    return CertState(ca=ca, serving=serving, bundle=bundle_of(certificates, now))


def _pair(secret: JsonObject | None, cert_key: str, key_key: str, *, what: str) -> KeyPair | None:
    if secret is None:
        return None
    try:
        data = _decoded(secret)
        pair = KeyPair(data[cert_key], data[key_key])
        pair.private_key()
        pair.certificate  # noqa: B018 (parses; raises on garbage)
    except (KeyError, ValueError, TypeError) as err:
        log.warning("certificates: the stored %s certificate is unusable (%r); making it again", what, err)
        return None
    return pair


def _certificates(bundle: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(bundle) if bundle.strip() else []
    except ValueError:
        return []


def _webhook_configuration(api: Kube, name: str) -> JsonObject:
    configuration = api.read(path("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", name))
    if configuration is None:
        raise LookupError(
            f"MutatingWebhookConfiguration {name!r} does not exist; install the manifests (docs/install.md) first"
        )
    return configuration


def _published(configuration: JsonObject) -> bytes:
    """The caBundle the apiserver verifies the webhook with now (the first webhook's: all are kept equal)."""
    for webhook in configuration.get("webhooks", []):
        encoded = webhook.get("clientConfig", {}).get("caBundle")
        if encoded:
            try:
                return base64.b64decode(encoded)
            except ValueError:
                return b""
    return b""


def _moves_too_soon(state: CertState, wanted: CertState, *, now: datetime, min_overlap: timedelta) -> bool:
    """True when `wanted` moves serving onto the stored CA less than min_overlap after that CA was made."""
    on_previous_ca = not signed_by(state.serving.certificate, state.ca.certificate)
    joined = state.ca.certificate.not_valid_before_utc + CLOCK_SKEW
    return on_previous_ca and wanted.serving is not state.serving and now - joined < min_overlap


def _publish_bundle(api: Kube, configuration: JsonObject, bundle: bytes) -> bool:
    """Set clientConfig.caBundle of every webhook in the configuration; a JSON Patch guarded by test ops."""
    where = path("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", configuration["metadata"]["name"])
    encoded = base64.b64encode(bundle).decode()
    ops: list[JsonObject] = []
    for index, webhook in enumerate(configuration.get("webhooks", [])):
        if webhook.get("clientConfig", {}).get("caBundle") != encoded:
            ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook["name"]})
            ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": encoded})
    if ops:
        api.patch(where, ops, kind="json")
    return bool(ops)


def _write_secret(
    api: Kube, stored: JsonObject | None, *, name: str, namespace: str, data: dict[str, bytes], kind: str
) -> bool:
    encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
    if stored is not None and stored.get("data") == encoded:
        return False
    if stored is None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "modelcache"}},
            "data": encoded,
        }
        api.create(path("v1", "secrets", namespace=namespace), body)
    else:
        stored["data"] = encoded  # replace carries the resourceVersion read: a concurrent writer gets 409
        api.replace(path("v1", "secrets", name, namespace=namespace), stored)
    return True


def _decoded(secret: JsonObject) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
