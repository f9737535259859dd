"""The certificate authority: chains that verify, SANs the apiserver accepts, a working handshake."""

from __future__ import annotations

import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.__main__ import main
from certs.authority import create_ca, issue_serving_cert, service_dns_names, write_tls_dir


def test_serving_certificate_verifies_against_its_ca() -> None:
    ca = create_ca()
    serving = issue_serving_cert(ca, service_dns_names("modelcache-webhook", "modelcache-system"))
    cert = serving.certificate
    cert.verify_directly_issued_by(ca.certificate)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "modelcache-webhook.modelcache-system.svc" in sans.get_values_for_type(x509.DNSName)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(serving.private_key(), ec.EllipticCurvePrivateKey)


def test_a_certificate_from_another_ca_does_not_verify() -> None:
    serving = issue_serving_cert(create_ca(), ["localhost"])
    with pytest.raises(InvalidSignature):  # same CA name, different key
        serving.certificate.verify_directly_issued_by(create_ca().certificate)


def test_validity_tolerates_skew_and_never_outlives_the_ca() -> None:
    now = datetime.now(UTC)
    ca = create_ca(now=now)
    serving = issue_serving_cert(ca, ["x"], validity=timedelta(days=100 * 365), now=now)
    assert serving.certificate.not_valid_before_utc <= now - timedelta(minutes=59)
    assert serving.certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_a_certificate_needs_a_name() -> None:
    with pytest.raises(ValueError, match="at least one"):
        issue_serving_cert(create_ca(), [])


def test_written_files_load_into_a_server_context_and_the_key_is_private(tmp_path: Path) -> None:
    ca = create_ca()
    write_tls_dir(tmp_path, issue_serving_cert(ca, ["localhost"], ip_addresses=["127.0.0.1"]), ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert client.get_ca_certs()[0]["subject"][0][0][1] == "modelcache webhook CA"


def test_cli_writes_a_service_certificate(tmp_path: Path) -> None:
    assert main(["local", "--dir", str(tmp_path), "--service", "modelcache-webhook", "--ip", "127.0.0.1"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "modelcache-webhook.modelcache-system.svc" in names.get_values_for_type(x509.DNSName)
