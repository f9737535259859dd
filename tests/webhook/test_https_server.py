"""The webhook over real HTTPS on 127.0.0.1: transport errors, TLS, hot certificate reload, metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from certs.authority import create_ca, issue_serving_cert, write_tls_dir
from devtools.admission import admission_review
from devtools.webhook_process import free_port, run_webhook, write_certificates
from webhook.app import create_app
from webhook.config import Settings
from webhook.review import MAX_BODY_BYTES, decode_patch
from webhook.tls import TlsReloader

HF_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "qwen-", "annotations": {"modelcache.io/model": "hf://Qwen/Qwen3-0.6B"}},
    "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]},
}


@dataclass
class Served:
    url: str
    port: int
    tls_dir: Path
    tls: TlsReloader
    app: web.Application
    certificate: x509.Certificate

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls_dir / "ca.crt"))


def new_certificates(directory: Path) -> x509.Certificate:
    ca = create_ca()
    serving = issue_serving_cert(ca, ["localhost"], ip_addresses=["127.0.0.1"])
    write_tls_dir(directory, serving, ca)
    return serving.certificate


@asynccontextmanager
async def serve(directory: Path, *, min_version: str = "1.2") -> AsyncIterator[Served]:
    certificate = new_certificates(directory / "tls")
    tls = TlsReloader(directory / "tls", min_version=min_version)
    assert tls.reload()
    app = create_app(Settings(tls_reload_seconds=0.1), tls=tls)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Served(f"https://127.0.0.1:{port}", port, directory / "tls", tls, app, certificate)
    finally:
        await runner.cleanup()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(tmp_path) as running:
        yield running


async def post(served: Served, body: bytes, *, content_type: str = "application/json") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            served.url + "/mutate", data=body, headers={"Content-Type": content_type}, ssl=served.client_context()
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_a_pod_is_mutated_over_https(served: Served) -> None:
    status, body = await post(served, json.dumps(admission_review(HF_POD, "serving")).encode())
    assert status == 200
    assert body["response"]["allowed"] is True
    assert decode_patch(body)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"{not json", "not JSON", id="broken-json"),
        pytest.param(b"[]", "not a JSON object", id="array"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "", id="deep-nesting"),
        pytest.param(b'{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}', "v1", id="v1beta1"),
        pytest.param(b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}', "no request", id="no-request"),
        pytest.param(b"\xff\xfe", "not JSON", id="not-utf8"),
    ],
)
async def test_malformed_reviews_get_400(served: Served, body: bytes, fragment: str) -> None:
    status, answer = await post(served, body)
    assert status == 400
    assert fragment in answer["error"]


async def test_wrong_content_type_gets_415(served: Served) -> None:
    status, answer = await post(served, b"apiVersion: v1", content_type="application/yaml")
    assert status == 415
    assert "application/json" in answer["error"]


async def test_a_body_over_7_mib_gets_413(served: Served) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            served.url + "/mutate",
            data=b" " * (MAX_BODY_BYTES + 1),
            headers={"Content-Type": "application/json"},
            ssl=served.client_context(),
        ) as response,
    ):
        assert response.status == 413


async def test_a_body_just_under_the_limit_is_read(served: Served) -> None:
    review = admission_review(HF_POD, "serving")
    review["request"]["object"]["metadata"]["annotations"]["padding"] = "x" * (6 * 1024 * 1024)
    status, body = await post(served, json.dumps(review).encode())
    assert status == 200
    assert body["response"]["allowed"] is True


async def test_a_bug_becomes_500_without_details(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("webhook.handlers.decide", broken)
    status, body = await post(served, json.dumps(admission_review(HF_POD, "serving")).encode())
    assert status == 500
    assert "secret internals" not in json.dumps(body)


async def test_health_and_readiness(served: Served, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz"):
            async with session.get(served.url + path, ssl=served.client_context()) as response:
                assert response.status == 200
    empty = TlsReloader(tmp_path / "missing")
    assert not empty.reload()
    assert not empty.ready


async def test_metrics_count_reviews_by_outcome(served: Served) -> None:
    await post(served, json.dumps(admission_review(HF_POD, "serving")).encode())
    await post(served, b"{")
    async with (
        aiohttp.ClientSession() as session,
        session.get(served.url + "/metrics", ssl=served.client_context()) as response,
    ):
        text = await response.text()
    samples = {
        (s.name, s.labels.get("outcome", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples["modelcache_webhook_reviews_total", "injected"] == 1
    assert samples["modelcache_webhook_reviews_total", "malformed"] == 1
    assert samples["modelcache_webhook_reviews_total", "denied"] == 0
    assert samples["modelcache_webhook_review_duration_seconds_count", ""] == 2  # every review is timed
    assert samples["modelcache_webhook_tls_not_after_timestamp_seconds", ""] > 0


def served_certificate(port: int, context: ssl.SSLContext) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.mark.parametrize(("server_minimum", "accepted"), [("1.2", True), ("1.3", False)])
async def test_the_minimum_tls_version_is_enforced(tmp_path: Path, server_minimum: str, accepted: bool) -> None:
    async with serve(tmp_path, min_version=server_minimum) as running:
        client = running.client_context()
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        if accepted:
            cert = await asyncio.to_thread(served_certificate, running.port, client)
            assert cert.serial_number == running.certificate.serial_number
        else:
            with pytest.raises(ssl.SSLError):
                await asyncio.to_thread(served_certificate, running.port, client)


async def test_certificate_rotation_while_serving(served: Served, tmp_path: Path) -> None:
    """A new CA and certificate are picked up by new handshakes; an open connection keeps working."""
    old_context = served.client_context()
    first = await asyncio.to_thread(served_certificate, served.port, old_context)
    connector = aiohttp.TCPConnector(limit=1, ssl=old_context)
    async with aiohttp.ClientSession(connector=connector) as kept:
        async with kept.get(served.url + "/healthz") as response:
            assert response.status == 200
        rotated = new_certificates(served.tls_dir)  # a different CA, as in a CA rotation
        new_context = served.client_context()
        seen = first
        for _ in range(200):  # the reload task polls every 0.1 s; bounded wait
            try:
                seen = await asyncio.to_thread(served_certificate, served.port, new_context)
            except ssl.SSLError:
                seen = first
            if seen.serial_number == rotated.serial_number:
                break
            await asyncio.sleep(0.05)
        assert seen.serial_number == rotated.serial_number
        # The keep-alive connection opened before the rotation still answers, without a new handshake.
        async with kept.post(served.url + "/mutate", json=admission_review(HF_POD, "serving")) as response:
            assert response.status == 200
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(served_certificate, served.port, old_context)


async def test_mismatched_pair_mid_rotation_keeps_serving_the_old_one(served: Served) -> None:
    before = served.tls.current
    assert before is not None
    other = issue_serving_cert(create_ca(), ["localhost"], ip_addresses=["127.0.0.1"])
    (served.tls_dir / "tls.crt").write_bytes(other.cert_pem)  # new certificate, old key
    assert served.tls.reload() is False
    assert served.tls.current is before
    cert = await asyncio.to_thread(served_certificate, served.port, served.client_context())
    assert cert.serial_number == served.certificate.serial_number


def test_liveness_answers_before_the_first_certificate_and_readiness_waits_for_it(tmp_path: Path) -> None:
    """First install: the controller issues the certificate up to a minute after the webhook starts."""
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()  # the Secret volume, still empty
    port, health = free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "MODELCACHE_HOST": "127.0.0.1",
        "MODELCACHE_PORT": str(port),
        "MODELCACHE_HEALTH_PORT": str(health),
        "MODELCACHE_TLS_DIR": str(tls_dir),
        "MODELCACHE_TLS_RELOAD_SECONDS": "0.2",
    }
    process = subprocess.Popen([sys.executable, "-m", "webhook"], env=env, stderr=subprocess.PIPE)
    try:
        assert wait_for_status(f"http://127.0.0.1:{health}/healthz", None) == 200
        ca = ssl.create_default_context(cafile=str(write_certificates(tmp_path / "issued")))
        with pytest.raises(urllib.error.URLError, match="SSL"):  # no certificate, no handshake: no HTTPS probe passes
            urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ca, timeout=2)
        for name in ("ca.crt", "tls.crt", "tls.key"):
            (tls_dir / name).write_bytes((tmp_path / "issued" / name).read_bytes())
        assert wait_for_status(f"https://127.0.0.1:{port}/readyz", ca) == 200
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_status(url: str, context: ssl.SSLContext | None, seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                return int(response.status)
        except OSError:
            assert time.monotonic() < deadline, f"{url}: no answer within {seconds} s"
            time.sleep(0.05)


def test_the_real_process_serves_and_validates_its_settings(tmp_path: Path) -> None:
    with run_webhook(tmp_path, env={"MODELCACHE_PVC_NAME": "shared-models"}) as webhook:
        request = urllib.request.Request(
            webhook.url + "/mutate",
            data=json.dumps(admission_review(HF_POD, "serving")).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=webhook.client_context(), timeout=10) as response:
            patch = decode_patch(json.load(response))
        volumes = next(op["value"] for op in patch if op["path"] == "/spec/volumes")
        assert volumes[0]["persistentVolumeClaim"]["claimName"] == "shared-models"
    bad = subprocess.run(
        [sys.executable, "-m", "webhook"],
        env={"MODELCACHE_PORT": "99999", "MODELCACHE_FETCHER_MEMORY_LIMIT": "lots", "MODELCACHE_PVC_NAMEE": "x"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "3 problem(s)" in bad.stderr
    for name in ("MODELCACHE_PORT", "MODELCACHE_FETCHER_MEMORY_LIMIT", "MODELCACHE_PVC_NAMEE"):
        assert name in bad.stderr


async def test_a_deployment_review_is_allowed_untouched(served: Served) -> None:
    review = admission_review(HF_POD, "serving")
    review["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    review["request"]["resource"] = {"group": "apps", "version": "v1", "resource": "deployments"}
    status, body = await post(served, json.dumps(review).encode())
    assert status == 200
    assert body["response"] == {"uid": review["request"]["uid"], "allowed": True}
