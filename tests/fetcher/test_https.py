"""https:// through local TLS servers that trust only our CA: verification, credentials, redirects, statuses."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.fetcher_env import fetcher_environment, run_fetcher
from devtools.fileserver import FileServer, Scripted
from modelcache.contract import keys, sources, wire

DATA = os.urandom(3 << 20)
FILES = {"/gguf/model.gguf": DATA, "/m.bin": DATA}
FAST_RETRIES = {"MODELCACHE_RETRIES": "2", "MODELCACHE_RETRY_BASE": "10ms"}


@pytest.fixture
def https(tmp_path: Path) -> Iterator[FileServer]:
    with FileServer(tmp_path / "tls", dict(FILES)).running() as server:
        yield server


@pytest.fixture
def cdn(tmp_path: Path, https: FileServer) -> Iterator[FileServer]:
    """Another origin (another port) with the same CA: where a redirect may send the client."""
    with FileServer(tmp_path / "cdn-tls", dict(FILES), ca=https.authority).running() as server:
        yield server


def fetch(source: str, cache: Path, server: FileServer, **extra: str) -> tuple[int, str]:
    env = fetcher_environment(source, cache, extra={"SSL_CERT_FILE": str(server.ca), **extra})
    result = run_fetcher(env)
    return result.returncode, (cache.parent / "pod-0.termination-log").read_text()


def test_an_https_file_is_verified_against_its_sha256(https: FileServer, cache: Path) -> None:
    digest = hashlib.sha256(DATA).hexdigest()
    source = f"{https.url}/gguf/model.gguf#sha256={digest}"
    code, message = fetch(source, cache, https, **{wire.HTTP_AUTHORIZATION_ENV: "Bearer s3cr3t"})
    assert code == 0, message
    key = keys.model_key(sources.parse_source(source))
    assert (Path(wire.model_path(str(cache), key)) / "model.gguf").read_bytes() == DATA
    assert {seen.authorization for seen in https.seen} == {"Bearer s3cr3t"}
    assert "s3cr3t" not in message


def test_an_https_file_with_the_wrong_sha256_is_refused(https: FileServer, cache: Path) -> None:
    code, message = fetch(f"{https.url}/gguf/model.gguf#sha256={'0' * 64}", cache, https)
    assert code == 5
    assert "failed verification" in message
    assert not list((cache / "store").rglob("model.gguf"))


def test_an_untrusted_certificate_is_not_accepted(https: FileServer, cache: Path) -> None:
    result = run_fetcher(fetcher_environment(f"{https.url}/m.bin", cache, extra=FAST_RETRIES))
    assert result.returncode == 8
    message = (cache.parent / "pod-0.termination-log").read_text()
    assert "TLS verification of 127.0.0.1 failed" in message
    assert "SSL_CERT_FILE" in message


def test_credentials_never_reach_the_origin_a_redirect_points_to(
    https: FileServer, cdn: FileServer, cache: Path
) -> None:
    https.script["/m.bin"] = [Scripted(302, {"Location": f"{cdn.url}/m.bin"}) for _ in range(4)]
    code, message = fetch(f"{https.url}/m.bin", cache, https, **{wire.HTTP_AUTHORIZATION_ENV: "Bearer s3cr3t"})
    assert code == 0, message
    assert {seen.authorization for seen in https.seen} == {"Bearer s3cr3t"}
    assert cdn.requests_to("/m.bin")  # the bytes came from the other origin...
    assert {seen.authorization for seen in cdn.seen} == {None}  # ...which never saw the credential


def test_a_redirect_loop_is_a_transfer_error_that_names_the_url(https: FileServer, cache: Path) -> None:
    https.script["/m.bin"] = [Scripted(302, {"Location": "/m.bin"}) for _ in range(100)]
    code, message = fetch(f"{https.url}/m.bin", cache, https, **FAST_RETRIES)
    assert code == 8, message
    assert "redirect" in message
    assert f"{https.url}/m.bin" in message


@pytest.mark.parametrize("denied", [401, 403])
def test_a_refused_https_download_names_the_secret_and_its_key(tmp_path: Path, cache: Path, denied: int) -> None:
    server = FileServer(tmp_path / "tls", dict(FILES), authorization="Bearer right")
    with server.running():
        given = {} if denied == 401 else {wire.HTTP_AUTHORIZATION_ENV: "Bearer wrong"}
        code, message = fetch(f"{server.url}/m.bin", cache, server, **{wire.SECRET_NAME_ENV: "model-creds", **given})
    assert code == 4, message
    assert f"HTTP {denied}" in message
    assert wire.HTTP_AUTHORIZATION_ENV in message
    assert "the Secret 'model-creds'" in message
    assert ("was refused" in message) is (denied == 403)
    assert "wrong" not in message


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        pytest.param(404, 3, "HTTP 404", id="not-found"),
        pytest.param(410, 3, "HTTP 410", id="gone"),
        pytest.param(400, 8, "HTTP 400", id="bad-request-is-final"),
        pytest.param(500, 8, "failed 2 times", id="server-error-retried-then-final"),
        pytest.param(429, 8, "failed 2 times", id="throttled-retried-then-final"),
    ],
)
def test_statuses_map_to_exit_codes(https: FileServer, cache: Path, status: int, code: int, words: str) -> None:
    https.script["/m.bin"] = [Scripted(status) for _ in range(10)]
    result, message = fetch(f"{https.url}/m.bin", cache, https, **FAST_RETRIES)
    assert result == code, message
    assert words in message
    assert https.url in message  # the endpoint is named


def test_a_retry_after_is_honoured_and_the_download_goes_on(https: FileServer, cache: Path) -> None:
    https.script["/m.bin"] = [Scripted(503, {"Retry-After": "1"})]
    env = fetcher_environment(f"{https.url}/m.bin", cache, extra={"SSL_CERT_FILE": str(https.ca)})
    result = run_fetcher(env)
    assert result.returncode == 0, result.stderr
    assert "retrying in 1.0 s" in result.stderr
    assert len(https.requests_to("/m.bin", "HEAD")) == 2
