"""Test-wide set-up: no network beyond loopback; a local Hub with a few repositories and a cache directory."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.hubserver import HubRepo, HubServer
from devtools.tinymodel import tiny_model_files
from tests.helpers import TOKEN

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check(address: Any) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
        if host == "localhost":
            return
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
        raise ConnectionRefusedError(f"tests may only connect to loopback, not {host!r}")


def _connect(self: socket.socket, address: Any) -> None:
    _check(address)
    _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check(address)
    return _real_connect_ex(self, address)


socket.socket.connect = _connect  # type: ignore[method-assign,assignment]
socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign,assignment]


@pytest.fixture
def hub() -> Iterator[HubServer]:
    repos = [
        HubRepo.single("tiny/model", tiny_model_files()),
        HubRepo.single("tiny/gated", tiny_model_files(seed=1), gated=True),
        HubRepo.single("tiny/private", tiny_model_files(seed=2), private=True),
        HubRepo.single("tiny/big", {"config.json": b"{}", "weights.bin": bytes(range(256)) * 16384}),  # 4 MiB
    ]
    with HubServer(repos, token=TOKEN) as server:
        yield server


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def moto() -> Iterator[str]:
    """A moto S3 server on loopback, for the whole run."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
