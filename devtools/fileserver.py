"""An HTTPS file server on loopback that trusts only our CA, for https:// sources and their failure paths.

It serves files with Range support and ETags, can require an Authorization header, and can be told to
answer a path with a script of responses first (a status, headers, a Location to redirect to) before it
serves the file: 503 with Retry-After, a redirect to another origin, a redirect loop. Every request is
recorded (method, path, Authorization), so a test can tell what reached which origin.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from certs.authority import KeyPair, create_ca, issue_serving_cert, write_tls_dir
from devtools.background import BackgroundLoop


@dataclass(frozen=True)
class Scripted:
    """One response a path gives before the file itself."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None
    range: str | None


class FileServer:
    """Files by path; `script[path]` is answered first, one entry per request, then the file."""

    def __init__(
        self, tls_dir: Path, files: dict[str, bytes], *, authorization: str | None = None, ca: KeyPair | None = None
    ) -> None:
        """`ca`: the CA to issue the certificate from (two servers that one SSL_CERT_FILE trusts)."""
        self.files = files
        self.authorization = authorization
        self.script: dict[str, list[Scripted]] = {}
        self.seen: list[Seen] = []
        self.tls_dir = tls_dir
        self.ca = tls_dir / "ca.crt"
        self.authority = ca or create_ca()
        write_tls_dir(
            tls_dir, issue_serving_cert(self.authority, ["localhost"], ip_addresses=["127.0.0.1"]), self.authority
        )
        self.url = ""

    def requests_to(self, path: str, method: str = "GET") -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path and seen.method == method]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.seen.append(Seen(request.method, path, request.headers.get("Authorization"), request.headers.get("Range")))
        pending = self.script.get(path)
        if pending:
            step = pending.pop(0)
            return web.Response(status=step.status, headers=step.headers, body=step.body)
        if self.authorization is not None and request.headers.get("Authorization") != self.authorization:
            return web.Response(status=401 if "Authorization" not in request.headers else 403, text="denied")
        data = self.files.get(path)
        if data is None:
            return web.Response(status=404, text="not found")
        headers = {"ETag": f'"{len(data)}-v1"', "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(data))})
        start = request.http_range.start or 0
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return web.Response(body=data[start:], status=206 if start else 200, headers=headers)

    @contextmanager
    def running(self) -> Iterator[FileServer]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls_dir / "tls.crt", self.tls_dir / "tls.key")
        background = BackgroundLoop("https-file-server")
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        background.run(runner.setup())
        background.run(web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start())
        self.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield self
        finally:
            background.run(runner.cleanup())
            background.close()
