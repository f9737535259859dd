"""The image suite: both images built once per run with `make images`, skipped only where podman cannot run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devtools.hubserver import HubRepo, HubServer
from devtools.tinymodel import tiny_model_files
from tests.images.kubelet import build_images, podman_problem

SERVED = "Qwen/Qwen3-0.6B"  # the model of the golden pod tests/webhook/cases/hf-basic


REQUIRED = "MODELCACHE_REQUIRE_IMAGES"  # CI sets it: there, an image suite that cannot run fails


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [item for item in items if "tests/images/" in item.nodeid]
    problem = podman_problem() if ours else None
    if problem and os.environ.get(REQUIRED):
        raise pytest.UsageError(f"{REQUIRED} is set, but the image tests cannot run: {problem}")
    if problem:
        for item in ours:
            item.add_marker(pytest.mark.skip(reason=problem))


@pytest.fixture(scope="session")
def images() -> None:
    build_images()


@pytest.fixture
def hub() -> Iterator[HubServer]:
    repos = [
        HubRepo.single(SERVED, tiny_model_files()),
        HubRepo.single("tiny/big", {"config.json": b"{}", "weights.bin": bytes(range(256)) * 32768}),  # 8 MiB
    ]
    with HubServer(repos) as server:
        yield server
