"""Certificate rotation: renewal timing, a CA bundle that overlaps old and new CAs, real handshakes."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from certs.authority import CA_VALIDITY, SERVING_VALIDITY, KeyPair, create_ca, issue_serving_cert
from certs.rotation import CertState, needs_renewal, rotate, signed_by

NAMES = ["modelcache-webhook", "modelcache-webhook.modelcache-system.svc"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def cas(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle)


@contextmanager
def serving(directory: Path, pair: KeyPair) -> Iterator[int]:
    """A TLS server on 127.0.0.1 with `pair`, completing handshakes in a thread."""
    (directory / "tls.crt").write_bytes(pair.cert_pem)
    (directory / "tls.key").write_bytes(pair.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def handshake(port: int, bundle: bytes, directory: Path) -> bool:
    (directory / "bundle.pem").write_bytes(bundle)
    client = ssl.create_default_context(cafile=str(directory / "bundle.pem"))
    client.check_hostname = False  # the certificates are for the Service's names; we dial 127.0.0.1
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, client.wrap_socket(raw) as tls:
            tls.send(b"x")
        return True
    except ssl.SSLCertVerificationError:
        return False


def test_a_first_run_creates_a_ca_a_serving_certificate_and_the_bundle() -> None:
    state = rotate(None, dns_names=NAMES, now=T0)
    assert signed_by(state.serving.certificate, state.ca.certificate)
    assert [c.serial_number for c in cas(state.bundle)] == [state.ca.certificate.serial_number]


def test_nothing_changes_while_nothing_is_due() -> None:
    state = rotate(None, dns_names=NAMES, now=T0)
    assert rotate(state, dns_names=NAMES, now=T0 + timedelta(days=30)) == state


def test_renewal_at_a_third_of_the_lifetime_left() -> None:
    state = rotate(None, dns_names=NAMES, now=T0)
    lifetime = SERVING_VALIDITY + timedelta(hours=1)  # validity starts an hour back
    assert not needs_renewal(state.serving.certificate, T0 + lifetime * 0.6)
    assert needs_renewal(state.serving.certificate, T0 + lifetime * 0.7)
    renewed = rotate(state, dns_names=NAMES, now=T0 + lifetime * 0.7)
    assert renewed.ca == state.ca
    assert renewed.serving != state.serving
    assert signed_by(renewed.serving.certificate, state.ca.certificate)


def test_new_service_names_get_a_new_certificate() -> None:
    state = rotate(None, dns_names=NAMES, now=T0)
    assert rotate(state, dns_names=[*NAMES, "extra.example"], now=T0).serving != state.serving


def test_a_ca_rotation_overlaps_old_and_new_ca_and_every_handshake_succeeds(tmp_path: Path) -> None:
    # Handshakes check validity against the real clock, so the rotation happens now: the CA was made long
    # enough ago to be due, and its latest serving certificate was issued yesterday.
    now = datetime.now(UTC)
    old_ca = create_ca(now=now - CA_VALIDITY * 0.7)
    old_serving = issue_serving_cert(old_ca, NAMES, now=now - timedelta(days=1))
    state = CertState(ca=old_ca, serving=old_serving, bundle=old_ca.cert_pem)
    due = now
    step1 = rotate(state, dns_names=NAMES, now=due)
    # Step 1: a new CA joins the bundle; the serving certificate stays on the old CA.
    assert step1.ca != state.ca
    assert step1.serving == state.serving
    assert {c.serial_number for c in cas(step1.bundle)} == {
        state.ca.certificate.serial_number,
        step1.ca.certificate.serial_number,
    }
    # Step 2: the serving certificate moves to the new CA; the old CA stays in the bundle until it expires.
    step2 = rotate(step1, dns_names=NAMES, now=due)
    assert signed_by(step2.serving.certificate, step2.ca.certificate)
    assert len(cas(step2.bundle)) == 2
    # A client holding the published bundle (the apiserver) completes handshakes with both servers.
    for pair in (state.serving, step2.serving):
        with serving(tmp_path, pair) as port:
            assert handshake(port, step2.bundle, tmp_path)
    # Without the overlap, the old serving certificate would be refused (what broke others' rotations).
    with serving(tmp_path, state.serving) as port:
        assert not handshake(port, step2.ca.cert_pem, tmp_path)
    # After the old CA expires, it leaves the bundle.
    later = rotate(step2, dns_names=NAMES, now=state.ca.certificate.not_valid_after_utc + timedelta(days=1))
    assert [c.serial_number for c in cas(later.bundle)] == [step2.ca.certificate.serial_number]
