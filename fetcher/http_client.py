"""HTTP downloads with urllib3: streaming, Range resume, manual redirects, errors mapped to ours.

Redirects are followed here, not by urllib3, so that credentials never leave their origin: the Hub
redirects LFS files to a CDN on another host, and the Authorization header must not go there.
"""

from __future__ import annotations

import email.utils
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError

from fetcher.retrying import RetryableError
from modelcache.contract.errors import AccessDeniedError, NotFoundError, TransferError

CHUNK = 4 << 20  # per read: fewer Python round trips; memory stays workers x 4 MiB
MAX_REDIRECTS = 10
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    url: str  # after redirects
    headers: Mapping[str, str]


class HttpClient:
    """A connection pool sized for the download workers."""

    def __init__(self, *, workers: int, connect_timeout: float, read_timeout: float, user_agent: str) -> None:
        self._pool = urllib3.PoolManager(
            num_pools=16,
            maxsize=max(workers, 4),
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._pool.clear()

    def head(self, url: str, *, headers: Mapping[str, str], what: str) -> Head:
        """HEAD, following redirects; the final response's headers."""
        response, final_url = self._request("HEAD", url, headers=headers, what=what)
        response.release_conn()
        return Head(status=response.status, url=final_url, headers=dict(response.headers))

    def get(
        self, url: str, *, headers: Mapping[str, str], offset: int, what: str, if_range: str | None = None
    ) -> tuple[int, Iterator[bytes]]:
        """GET from `offset`; returns the offset the server actually starts at, and the chunks."""
        request_headers = dict(headers)
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
            if if_range:
                request_headers["If-Range"] = if_range
        response, _ = self._request("GET", url, headers=request_headers, what=what)
        if response.status != 206:
            return 0, _chunks(response, what)  # the whole file (Range ignored, or If-Range saw a change)
        start = _content_range_start(response.headers.get("Content-Range", ""))
        if start != offset:
            response.drain_conn()
            response.release_conn()
            raise RetryableError(f"{what}: asked for bytes from {offset}, the server sent from {start}")
        return start, _chunks(response, what)

    def _request(
        self, method: str, url: str, *, headers: Mapping[str, str], what: str
    ) -> tuple[urllib3.BaseHTTPResponse, str]:
        origin = _origin(url)
        current = url
        sent = dict(headers)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = self._pool.request(
                    method, current, headers=sent, redirect=False, preload_content=False, retries=False
                )
            except SSLError as err:
                raise TransferError(
                    f"{what}: TLS verification of {_origin(current)[1]} failed ({err}). If the server uses a private "
                    "CA, add it to the fetcher image's trust store or point SSL_CERT_FILE at a bundle that has it."
                ) from err
            except Urllib3Error as err:
                raise RetryableError(f"{type(err).__name__}: {err}") from err
            if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                response.drain_conn()
                response.release_conn()
                current = urllib.parse.urljoin(current, response.headers["Location"])
                if _origin(current) != origin:
                    sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
                continue
            _raise_for_status(response, what)
            return response, current
        raise NotFoundError(f"{what}: more than {MAX_REDIRECTS} redirects from {url}")


def _raise_for_status(response: urllib3.BaseHTTPResponse, what: str) -> None:
    status = response.status
    if status < 400:
        return
    response.drain_conn()
    response.release_conn()
    message = f"HTTP {status} for {what}"
    if status in _RETRYABLE_STATUS or status >= 500:
        raise RetryableError(message, retry_after=parse_retry_after(response.headers))
    if status in (401, 403, 407):
        raise AccessDeniedError(message)
    if status in (404, 410):
        raise NotFoundError(message)
    raise TransferError(message)


def _chunks(response: urllib3.BaseHTTPResponse, what: str) -> Iterator[bytes]:
    try:
        # read1: whatever has arrived, up to CHUNK. read(CHUNK) would wait for the full amount, so on a slow
        # link nothing would reach the disk (or the progress, or a resumable .part) for a long time.
        while data := response.read1(CHUNK, decode_content=False):
            yield data
    except Urllib3Error as err:
        raise RetryableError(f"{what}: the download broke off ({type(err).__name__})") from err
    finally:
        response.release_conn()


def _content_range_start(value: str) -> int:
    """The first byte of "bytes 100-199/200"; -1 when the header is missing or malformed."""
    try:
        return int(value.split(" ", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return -1


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); the Hub's RateLimit "t=" as a fallback."""
    value = headers.get("Retry-After")
    if value:
        if value.strip().isdigit():
            return float(value.strip())
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    rate_limit = headers.get("RateLimit", "")
    for part in rate_limit.split(";"):
        name, _, number = part.strip().partition("=")
        if name == "t" and number.isdigit():
            return float(number)
    return None
