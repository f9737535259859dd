"""HTTP downloads with urllib3: streaming, Range resume, redirects, errors mapped to ours.

urllib3 follows redirects (``Retry(redirect=...)``) and drops ``Authorization``, ``Cookie`` and
``Proxy-Authorization`` when one leads to another origin (scheme, host, port): the Hub sends LFS files to a
CDN on another host, and a credential must not go there. Every request starts from the URL the source
names, never from where a redirect led last time, so a credential is only ever sent to its own origin.
urllib3 retries nothing else: transient failures become RetryableError for fetcher.retrying.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError, SSLError
from urllib3.util import Retry

from fetcher.retrying import RetryableError
from modelcache.contract.errors import AccessDeniedError, NotFoundError, TransferError

CHUNK = 4 << 20  # per read: fewer Python round trips; memory stays workers x 4 MiB
MAX_REDIRECTS = 10
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Follow redirects and nothing else: connection and read failures come back to us at once.
_REDIRECTS_ONLY = Retry(
    total=None, connect=0, read=0, status=0, other=0, redirect=MAX_REDIRECTS, raise_on_redirect=True
)


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
            retries=_REDIRECTS_ONLY,
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._pool.clear()

    def head(self, url: str, *, headers: Mapping[str, str], what: str, denied: str = "") -> Head:
        """HEAD, following redirects; the final response's headers. `denied`: what to do on 401/403."""
        response = self._request("HEAD", url, headers=headers, what=what, denied=denied)
        response.release_conn()
        return Head(status=response.status, url=response.geturl() or url, headers=dict(response.headers))

    def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        offset: int,
        what: str,
        end: int | None = None,
        if_range: str | None = None,
        denied: str = "",
    ) -> tuple[int, Iterator[bytes]]:
        """GET from `offset` (to `end`, inclusive, when given); the offset the server starts at, and the chunks."""
        request_headers = dict(headers)
        if offset or end is not None:
            request_headers["Range"] = f"bytes={offset}-{'' if end is None else end}"
            if if_range:
                request_headers["If-Range"] = if_range
        response = self._request("GET", url, headers=request_headers, what=what, denied=denied)
        if response.status != 206:
            return 0, _chunks(response, what)  # the whole file (Range ignored, or If-Range saw a change)
        start = _content_range_start(response.headers.get("Content-Range", ""))
        if start != offset:
            response.drain_conn()
            response.release_conn()
            raise RetryableError(f"{what}: asked for bytes from {offset}, the server sent from {start}")
        return start, _chunks(response, what)

    def _request(
        self, method: str, url: str, *, headers: Mapping[str, str], what: str, denied: str
    ) -> urllib3.BaseHTTPResponse:
        try:
            response = self._pool.request(method, url, headers=dict(headers), preload_content=False)
        except SSLError as err:
            raise _tls_error(what, url, err) from err
        except MaxRetryError as err:
            if isinstance(err.reason, ResponseError):  # urllib3's "too many redirects"
                raise TransferError(
                    f"{what}: {url} redirected more than {MAX_REDIRECTS} times (a redirect loop); check the URL "
                    "and the server's redirects"
                ) from err
            if isinstance(err.reason, SSLError):
                raise _tls_error(what, url, err.reason) from err
            raise RetryableError(f"{_origin_of(url)}: {type(err.reason).__name__}: {err.reason}") from err
        except Urllib3Error as err:
            raise RetryableError(f"{_origin_of(url)}: {type(err).__name__}: {err}") from err
        _raise_for_status(response, what, denied)
        return response


def _tls_error(what: str, url: str, err: Exception) -> TransferError:
    return TransferError(
        f"{what}: TLS verification of {_host(url)} failed ({err}). If the server uses a private CA, add it to the "
        "fetcher image's trust store or point SSL_CERT_FILE at a bundle that has it."
    )


def _raise_for_status(response: urllib3.BaseHTTPResponse, what: str, denied: str) -> None:
    status = response.status
    if status < 400:
        return
    response.drain_conn()
    response.release_conn()
    message = f"HTTP {status} for {what}"
    if status in _RETRYABLE_STATUS or status >= 500:
        raise RetryableError(message, retry_after=parse_retry_after(response.headers))
    if status in (401, 403, 407):
        raise AccessDeniedError(f"{message}; {denied}" if denied else message)
    if status in (404, 410):
        raise NotFoundError(message)
    raise TransferError(message)


def _chunks(response: urllib3.BaseHTTPResponse, what: str) -> Iterator[bytes]:
    complete = False
    try:
        # read1: whatever has arrived, up to CHUNK. read(CHUNK) would wait for the full amount, so on a slow
        # link nothing would reach the disk (or the progress, or a resumable .part) for a long time.
        while data := response.read1(CHUNK, decode_content=False):
            yield data
        complete = True
    except Urllib3Error as err:
        raise RetryableError(f"{what}: the download broke off ({type(err).__name__})") from err
    finally:
        if not complete:
            # Abandoned mid-body (a refused range, a stop, an error): the connection still has the rest of
            # the body in flight, so it is closed, never handed to the next request in that state.
            response.close()
        response.release_conn()


def _content_range_start(value: str) -> int:
    """The first byte of "bytes 100-199/200"; -1 when the header is missing or malformed."""
    try:
        return int(value.split(" ", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return -1


def _host(url: str) -> str:
    return urllib3.util.parse_url(url).host or url


def _origin_of(url: str) -> str:
    parts = urllib3.util.parse_url(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date, as urllib3 reads it); the Hub's RateLimit
    "t=" as a fallback."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, Retry().parse_retry_after(value))
        except InvalidHeader:
            return None
    for part in headers.get("RateLimit", "").split(";"):
        name, _, number = part.strip().partition("=")
        if name == "t" and number.isdigit():
            return float(number)
    return None
