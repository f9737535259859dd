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

from certs.authority import CLOCK_SKEW, KeyPair, service_dns_names
from certs.rotation import CertState, rotate, signed_by
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
    state = _state_of(stored_ca, stored_tls)
    wanted = rotate(state, dns_names=service_dns_names(service, namespace), now=now)
    if state is not None and _moves_too_soon(state, wanted, now=now, min_overlap=min_overlap):
        wanted = replace(wanted, serving=state.serving)
    changes = []
    ca_data = {"ca.crt": wanted.ca.cert_pem, "ca.key": wanted.ca.key_pem}
    if _write_secret(api, stored_ca, name=ca_secret, namespace=namespace, data=ca_data, kind="Opaque"):
        changes.append(f"stored a new CA in Secret {namespace}/{ca_secret}")
    if _publish_bundle(api, webhook_configuration, wanted.bundle):
        changes.append(f"published a CA bundle of {wanted.bundle.count(b'BEGIN')} into {webhook_configuration}")
    tls_data = {"tls.crt": wanted.serving.cert_pem, "tls.key": wanted.serving.key_pem, "ca.crt": wanted.bundle}
    if _write_secret(api, stored_tls, name=tls_secret, namespace=namespace, data=tls_data, kind="kubernetes.io/tls"):
        changes.append(f"stored a serving certificate in Secret {namespace}/{tls_secret}")
    for change in changes:
        log.info("certificates: %s", change)
    return changes


def _state_of(stored_ca: JsonObject | None, stored_tls: JsonObject | None) -> CertState | None:
    """The stored state, or None (start over) when a piece is missing or unreadable."""
    if stored_ca is None or stored_tls is None:
        return None
    try:
        ca, tls = _decoded(stored_ca), _decoded(stored_tls)
        state = CertState(
            ca=KeyPair(ca["ca.crt"], ca["ca.key"]),
            serving=KeyPair(tls["tls.crt"], tls["tls.key"]),
            bundle=tls.get("ca.crt", ca["ca.crt"]),
        )
        state.ca.private_key()
        state.serving.certificate  # noqa: B018 (parses; raises on garbage)
    except (KeyError, ValueError, TypeError) as err:
        log.warning("certificates: the stored ones are unusable (%r); issuing new ones", err)
        return None
    return state


def _moves_too_soon(state: CertState, wanted: CertState, *, now: datetime, min_overlap: timedelta) -> bool:
    """True when `wanted` moves serving onto the stored CA less than min_overlap after that CA was made."""
    on_previous_ca = not signed_by(state.serving.certificate, state.ca.certificate)
    joined = state.ca.certificate.not_valid_before_utc + CLOCK_SKEW
    return on_previous_ca and wanted.serving is not state.serving and now - joined < min_overlap


def _publish_bundle(api: Kube, name: str, bundle: bytes) -> bool:
    """Set clientConfig.caBundle of every webhook in the configuration; a JSON Patch guarded by test ops."""
    where = path("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", name)
    configuration = api.read(where)
    if configuration is None:
        raise LookupError(
            f"MutatingWebhookConfiguration {name!r} does not exist; install the manifests (docs/install.md) first"
        )
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
