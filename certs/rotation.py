"""When to renew, and what to publish: the pure part of certificate rotation.

The apiserver trusts the caBundle of the webhook configuration. Replacing the CA outright breaks every
webhook call until all webhook pods reload (cert-manager#7469 measured 49-90 s). So a new CA is added
to the bundle next to the old ones that are still valid, and the serving certificate moves to it only
after the bundle is published. Old CAs leave the bundle when they expire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from certs.authority import KeyPair, create_ca, issue_serving_cert

RENEW_AT_REMAINING = 1 / 3  # renew a certificate when a third of its lifetime is left


@dataclass(frozen=True, slots=True)
class CertState:
    """What is stored (in a Secret): the CA pair, the serving pair, and the published CA bundle."""

    ca: KeyPair
    serving: KeyPair
    bundle: bytes


def needs_renewal(certificate: x509.Certificate, now: datetime) -> bool:
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    return certificate.not_valid_after_utc - now <= lifetime * RENEW_AT_REMAINING


def bundle_of(certificates: list[x509.Certificate], now: datetime) -> bytes:
    """PEM bundle of the certificates still valid at `now`, newest first, each once."""
    seen: set[bytes] = set()
    kept = []
    for certificate in sorted(certificates, key=lambda c: c.not_valid_before_utc, reverse=True):
        fingerprint = certificate.fingerprint(hashes.SHA256())
        if certificate.not_valid_after_utc > now and fingerprint not in seen:
            seen.add(fingerprint)
            kept.append(certificate.public_bytes(serialization.Encoding.PEM))
    return b"".join(kept)


def rotate(state: CertState | None, *, dns_names: list[str], now: datetime) -> CertState:
    """The next state to store and publish. Call it periodically; publish the bundle it returns each time.

    In two steps when the CA is due: first a new CA joins the bundle while the serving certificate stays
    on the old CA; on the next call (the bundle with the new CA is out by then) the serving
    certificate moves to the new CA. Nothing changes while nothing is due.
    """
    if state is None:
        ca = create_ca(now=now)
        serving = issue_serving_cert(ca, dns_names, now=now)
        return CertState(ca=ca, serving=serving, bundle=bundle_of([ca.certificate], now))
    published = x509.load_pem_x509_certificates(state.bundle) if state.bundle else []
    if needs_renewal(state.ca.certificate, now):
        ca = create_ca(now=now)
        return CertState(ca=ca, serving=state.serving, bundle=bundle_of([*published, ca.certificate], now))
    serving = state.serving
    stale = (
        not signed_by(serving.certificate, state.ca.certificate)
        or needs_renewal(serving.certificate, now)
        or _dns_names(serving.certificate) != sorted(dns_names)
    )
    if stale:
        serving = issue_serving_cert(state.ca, dns_names, now=now)
    return CertState(ca=state.ca, serving=serving, bundle=bundle_of([*published, state.ca.certificate], now))


def signed_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _dns_names(certificate: x509.Certificate) -> list[str]:
    extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return sorted(extension.value.get_values_for_type(x509.DNSName))
