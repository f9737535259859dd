"""Run the real webhook (`python -m webhook`) as a process on loopback with a fresh certificate."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from certs.authority import create_ca, issue_serving_cert, write_tls_dir

READY_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class RunningWebhook:
    url: str
    ca_file: Path
    tls_dir: Path
    process: subprocess.Popen[bytes]
    health_url: str = ""  # plain HTTP, GET /healthz

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts only our CA, as the apiserver does with the caBundle."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_certificates(directory: Path) -> Path:
    """A CA and a serving certificate for 127.0.0.1 and localhost; returns the CA file."""
    ca = create_ca()
    write_tls_dir(directory, issue_serving_cert(ca, ["localhost"], ip_addresses=["127.0.0.1"]), ca)
    return directory / "ca.crt"


@contextmanager
def run_webhook(
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    log_file: Path | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[RunningWebhook]:
    """Start the webhook, wait until /readyz says ready, stop it afterwards."""
    tls_dir = workdir / "tls"
    ca_file = write_certificates(tls_dir)
    port, health = free_port(), free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELCACHE_")},
        "MODELCACHE_HOST": "127.0.0.1",
        "MODELCACHE_PORT": str(port),
        "MODELCACHE_HEALTH_PORT": str(health),
        "MODELCACHE_TLS_DIR": str(tls_dir),
        **(env or {}),
    }
    log = open(log_file or os.devnull, "ab")  # noqa: SIM115 (closed below, after the process)
    process = subprocess.Popen([sys.executable, "-m", "webhook"], env=environ, stdout=log, stderr=log)
    running = RunningWebhook(
        url=f"https://127.0.0.1:{port}",
        ca_file=ca_file,
        tls_dir=tls_dir,
        process=process,
        health_url=f"http://127.0.0.1:{health}",
    )
    try:
        wait_ready(running, timeout=ready_timeout)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_ready(webhook: RunningWebhook, *, timeout: float = READY_TIMEOUT) -> None:
    """Poll /readyz until 200; fail if the process exits or the time runs out."""
    context = webhook.client_context()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if webhook.process.poll() is not None:
            raise RuntimeError(f"the server exited with status {webhook.process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(webhook.url + "/readyz", context=context, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the server was not ready within {timeout:.0f} s")
