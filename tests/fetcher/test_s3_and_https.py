"""s3:// through a moto server on 127.0.0.1, https:// through a local TLS server that trusts our CA."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

from certs.authority import create_ca, issue_serving_cert, write_tls_dir
from devtools.background import BackgroundLoop
from devtools.fetcher_env import fetcher_environment, run_fetcher
from modelcache.contract import keys, sources, wire

WEIGHTS = os.urandom(9 << 20)  # 9 MiB: uploaded in parts, like a real checkpoint shard
FILES = {"config.json": b'{"model_type": "tiny"}', "weights/model.safetensors": WEIGHTS, "tokenizer.json": b"{}"}


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MODELCACHE_RETRY_BASE": "10ms",
    }


@pytest.fixture(scope="module")
def bucket(moto: str) -> str:
    s3: Any = boto3.client(
        "s3", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    s3.create_bucket(Bucket="models")
    for path, data in FILES.items():
        extra = {"ChecksumAlgorithm": "SHA256"} if path == "config.json" else {}
        s3.put_object(Bucket="models", Key=f"llama/v1/{path}", Body=data, **extra)
    s3.put_object(Bucket="models", Key="llama/v1/", Body=b"")  # a "directory" marker some tools write
    return "models"


def test_an_s3_prefix_is_fetched_into_one_immutable_directory(moto: str, bucket: str, cache: Path) -> None:
    result = run_fetcher(fetcher_environment("s3://models/llama/v1", cache, extra=aws_env(moto)))
    assert result.returncode == 0, result.stderr
    key = keys.model_key(sources.parse_source("s3://models/llama/v1"))
    model = Path(wire.model_path(str(cache), key))
    for path, data in FILES.items():
        assert (model / path).read_bytes() == data
    assert model.resolve().parent == (cache / "store" / key).resolve()
    assert "downloaded" in (cache.parent / "pod-0.termination-log").read_text()
    again = run_fetcher(fetcher_environment("s3://models/llama/v1", cache, extra=aws_env(moto)))
    assert "cache hit" in again.stderr


def test_s3_include_patterns(moto: str, bucket: str, cache: Path) -> None:
    env = fetcher_environment("s3://models/llama/v1", cache, include=("*.json",), extra=aws_env(moto))
    assert run_fetcher(env).returncode == 0
    model = Path(env[wire.MODEL_PATH_ENV])
    assert sorted(p.name for p in model.rglob("*") if p.is_file()) == ["config.json", "tokenizer.json"]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        pytest.param("s3://models/nothing-here", "no objects under s3://models/nothing-here", id="empty-prefix"),
        pytest.param("s3://no-such-bucket/x", "not found", id="missing-bucket"),
    ],
)
def test_s3_not_found(moto: str, bucket: str, cache: Path, source: str, fragment: str) -> None:
    result = run_fetcher(fetcher_environment(source, cache, extra=aws_env(moto)))
    assert result.returncode == 3, result.stderr
    assert fragment in (cache.parent / "pod-0.termination-log").read_text()


class FileServer:
    """An HTTPS server for one file, with Range support, and a record of Authorization headers."""

    def __init__(self, directory: Path, data: bytes) -> None:
        self.data = data
        self.authorizations: list[str | None] = []
        self.ca = directory / "ca.crt"
        ca = create_ca()
        write_tls_dir(directory, issue_serving_cert(ca, ["localhost"], ip_addresses=["127.0.0.1"]), ca)
        self.tls_dir = directory
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.authorizations.append(request.headers.get("Authorization"))
        start = request.http_range.start or 0
        headers = {"ETag": '"v1"', "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(self.data))})
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(self.data) - 1}/{len(self.data)}"
        return web.Response(body=self.data[start:], status=206 if start else 200, headers=headers)

    def serve(self) -> Iterator[None]:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls_dir / "tls.crt", self.tls_dir / "tls.key")
        background = BackgroundLoop("https-file-server")
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        background.run(runner.setup())
        background.run(web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start())
        self.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
        yield
        background.run(runner.cleanup())
        background.close()


@pytest.fixture
def https(tmp_path: Path) -> Iterator[FileServer]:
    server = FileServer(tmp_path / "tls", os.urandom(3 << 20))
    yield from (server for _ in server.serve())


def test_an_https_file_is_verified_against_its_sha256(https: FileServer, cache: Path) -> None:
    digest = hashlib.sha256(https.data).hexdigest()
    source = f"{https.url}/gguf/model.gguf#sha256={digest}"
    extra = {"SSL_CERT_FILE": str(https.ca), wire.HTTP_AUTHORIZATION_ENV: "Bearer s3cr3t"}
    result = run_fetcher(fetcher_environment(source, cache, extra=extra))
    assert result.returncode == 0, result.stderr
    key = keys.model_key(sources.parse_source(source))
    assert (Path(wire.model_path(str(cache), key)) / "model.gguf").read_bytes() == https.data
    assert set(https.authorizations) == {"Bearer s3cr3t"}
    assert "s3cr3t" not in result.stderr


def test_an_https_file_with_the_wrong_sha256_is_refused(https: FileServer, cache: Path) -> None:
    source = f"{https.url}/gguf/model.gguf#sha256={'0' * 64}"
    result = run_fetcher(fetcher_environment(source, cache, extra={"SSL_CERT_FILE": str(https.ca)}))
    assert result.returncode == 5
    assert "failed verification" in (cache.parent / "pod-0.termination-log").read_text()
    assert not list((cache / "store").rglob("model.gguf"))


def test_an_untrusted_certificate_is_not_accepted(https: FileServer, cache: Path) -> None:
    result = run_fetcher(
        fetcher_environment(
            f"{https.url}/m.bin", cache, extra={"MODELCACHE_RETRIES": "2", "MODELCACHE_RETRY_BASE": "10ms"}
        )
    )
    assert result.returncode == 8
    message = (cache.parent / "pod-0.termination-log").read_text()
    assert "TLS verification of 127.0.0.1 failed" in message
    assert "SSL_CERT_FILE" in message


def test_irsa_web_identity_credentials_are_used(moto: str, bucket: str, cache: Path, tmp_path: Path) -> None:
    """No static keys: boto3's chain assumes the role with the projected token, as on EKS with IRSA."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl")
    env = fetcher_environment(
        "s3://models/llama/v1",
        cache,
        include=("config.json",),
        extra={
            "AWS_ENDPOINT_URL": moto,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/model-reader",
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
            "AWS_ROLE_SESSION_NAME": "modelcache",
        },
    )
    result = run_fetcher(env)
    assert result.returncode == 0, result.stderr
    assert (Path(env[wire.MODEL_PATH_ENV]) / "config.json").read_bytes() == FILES["config.json"]


def test_without_any_credentials_the_message_says_where_to_put_them(moto: str, bucket: str, cache: Path) -> None:
    env = fetcher_environment(
        "s3://models/llama/v1",
        cache,
        extra={
            "AWS_ENDPOINT_URL": moto,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        },
    )
    result = run_fetcher(env)
    assert result.returncode == 4, result.stderr
    message = (cache.parent / "pod-0.termination-log").read_text()
    assert "no AWS credentials found" in message
    assert "IRSA" in message
