"""Fixtures for fetcher tests: a local Hub with a few repositories, and a cache directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.hubserver import HubRepo, HubServer
from devtools.tinymodel import tiny_model_files

TOKEN = "hf_test_token_0123456789"


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
