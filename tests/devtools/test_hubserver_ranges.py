"""The local Hub answers byte ranges as RFC 9110 section 14 says, so ranged downloads are tested against
a server that behaves like the Hub's CDN: `bytes=A-B`, `bytes=A-` and suffix ranges, and 416 for a range
past the end. A request the server may ignore (several ranges, bad syntax) gets the whole file, 200."""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Iterator

import pytest

from devtools.hubserver import HubRepo, HubServer

DATA = bytes(range(256)) * 40  # 10240 bytes: an LFS file, served by the "CDN"


@pytest.fixture(scope="module")
def cdn() -> Iterator[str]:
    """The redirect target of the LFS file: where ranged reads go."""
    with HubServer([HubRepo.single("org/model", {"weights.bin": DATA, "config.json": b"{}" * 10})]) as hub:
        parsed = urllib.parse.urlsplit(hub.url)
        connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
        connection.request("HEAD", "/org/model/resolve/main/weights.bin")
        location = connection.getresponse().getheader("Location") or ""
        connection.close()
        yield location


def get(url: str, range_header: str | None) -> tuple[int, dict[str, str], bytes]:
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=10)
    headers = {"Range": range_header} if range_header else {}
    connection.request("GET", f"{parsed.path}?{parsed.query}", headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-199", 100, 199),
        ("bytes=10000-", 10000, 10239),
        ("bytes=10000-99999", 10000, 10239),  # a last position past the end is the end
        ("bytes=-240", 10000, 10239),  # the last 240 bytes
        ("bytes=-99999", 0, 10239),  # a suffix longer than the file is the whole file
        ("bytes=5-5", 5, 5),
    ],
)
def test_a_satisfiable_range_gets_exactly_those_bytes_as_206(cdn: str, header: str, first: int, last: int) -> None:
    status, headers, body = get(cdn, header)
    assert status == 206
    assert headers["content-range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert int(headers["content-length"]) == last - first + 1
    assert body == DATA[first : last + 1]


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-20001", "bytes=-0"])
def test_a_range_past_the_end_is_416_with_the_size(cdn: str, header: str) -> None:
    status, headers, _ = get(cdn, header)
    assert status == 416
    assert headers["content-range"] == f"bytes */{len(DATA)}"


@pytest.mark.parametrize("header", [None, "bytes=0-1,5-6", "bytes=9-2", "lines=0-10", "bytes=x-"])
def test_no_range_or_one_the_server_may_ignore_gets_the_whole_file(cdn: str, header: str | None) -> None:
    status, headers, body = get(cdn, header)
    assert status == 200
    assert "content-range" not in headers
    assert body == DATA
