"""https:// models: one file, pinned by its ETag and size (and its sha256 when the URL gives one)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

from fetcher.http_client import HttpClient
from fetcher.plan import Plan, RemoteFile
from modelcache.contract.errors import TransferError
from modelcache.contract.sources import HttpSource
from modelcache.contract.wire import HTTP_AUTHORIZATION_ENV


class HttpAdapter:
    def __init__(self, source: HttpSource, *, environ: Mapping[str, str], http: HttpClient, secret_hint: str) -> None:
        self.source = source
        self.http = http
        authorization = environ.get(HTTP_AUTHORIZATION_ENV, "")
        self.headers = {"Authorization": authorization} if authorization else {}
        self.denied = (
            f"the Authorization header value under key {HTTP_AUTHORIZATION_ENV} in {secret_hint} was refused; check it"
            if authorization
            else f"put an Authorization header value under key {HTTP_AUTHORIZATION_ENV} in {secret_hint}"
        )

    def resolve(self) -> Plan:
        head = self.http.head(self.source.url, headers=self.headers, what=self.source.url, denied=self.denied)
        length = head.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise TransferError(
                f"{self.source.url} did not say its size (no Content-Length on HEAD); the fetcher needs it to check "
                "free space and completeness. Serve the file with a Content-Length."
            )
        etag = head.headers.get("ETag")
        identity = f"{self.source.url}\n{etag or ''}\n{length}\n{self.source.sha256 or ''}"
        version = self.source.sha256[:16] if self.source.sha256 else hashlib.sha256(identity.encode()).hexdigest()[:16]
        file = RemoteFile(
            path=self.source.file_name,
            size=int(length),
            sha256=self.source.sha256,
            locator=self.source.url,  # redirects are followed again each time, from the source's own origin
            etag=etag if etag and not etag.startswith("W/") else None,
        )
        return Plan(version=version, files=(file,))

    def open(self, file: RemoteFile, offset: int, end: int | None = None) -> tuple[int, Iterator[bytes]]:
        # If-Range: resume only if the file is still the one we started; else the server sends it whole.
        return self.http.get(
            file.locator,
            headers=self.headers,
            offset=offset,
            end=end,
            what=file.locator,
            if_range=file.etag,
            denied=self.denied,
        )

    def close(self) -> None:
        self.http.close()
