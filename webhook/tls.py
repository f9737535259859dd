"""TLS for the webhook: a server context whose certificate is swapped in, without a restart.

The listening context's SNI callback points every new handshake at the newest good context, so a
rotated Secret (files replaced in place, as the kubelet does with symlinks) takes effect on the next
handshake while connections already open keep theirs. A new pair is loaded into a fresh context
first, so a half-written rotation (new certificate, old key) never breaks the served one.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

log = logging.getLogger(__name__)
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"


@dataclass(frozen=True, slots=True)
class LoadedPair:
    context: ssl.SSLContext
    digest: str
    not_after: datetime
    subject: str


class TlsReloader:
    """Owns the listening SSLContext and the certificate currently served through it."""

    def __init__(self, directory: Path, *, min_version: str = "1.2") -> None:
        self.directory = directory
        self._min_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        self._current: LoadedPair | None = None
        self.server_context = self._new_context()
        self.server_context.sni_callback = self._select_context

    @property
    def ready(self) -> bool:
        """A valid, unexpired certificate is being served."""
        current = self._current
        return current is not None and datetime.now(UTC) < current.not_after

    @property
    def current(self) -> LoadedPair | None:
        return self._current

    def reload(self) -> bool:
        """Load the files if they changed; True when a new certificate is now served."""
        cert_path, key_path = self.directory / CERT_FILE, self.directory / KEY_FILE
        try:
            cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
        except OSError as err:
            log.warning("TLS files not readable in %s: %s", self.directory, err)
            return False
        digest = hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest()
        if self._current is not None and self._current.digest == digest:
            return False
        context = self._new_context()
        try:
            context.load_cert_chain(cert_path, key_path)
            certificate = x509.load_pem_x509_certificate(cert_pem)
        except (ssl.SSLError, ValueError, OSError) as err:
            # Mid-rotation the certificate and key may not match yet: keep serving the old pair.
            log.warning("TLS files in %s not usable yet, keeping the current certificate: %s", self.directory, err)
            return False
        if self._current is None:
            self.server_context.load_cert_chain(cert_path, key_path)
        self._current = LoadedPair(
            context=context,
            digest=digest,
            not_after=certificate.not_valid_after_utc,
            subject=certificate.subject.rfc4514_string(),
        )
        log.info("serving TLS certificate %s valid until %s", self._current.subject, self._current.not_after)
        return True

    def _new_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self._min_version
        context.set_alpn_protocols(["http/1.1"])
        return context

    def _select_context(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        current = self._current
        if current is not None:
            sslobj.context = current.context
