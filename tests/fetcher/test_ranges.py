"""A large file over parallel ranged requests, with the real fetcher process against the local Hub:
streams at once, resume per chunk after SIGKILL, a server that ignores Range, a chunk cut short or
corrupted, connections that close at random. Every byte is verified before anything is published.

The chunk is set small (MODELCACHE_RANGE_CHUNK=1Mi) so that an 8 MiB file has 8 chunks.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.fetcher_env import fetcher_environment, run_fetcher, start_fetcher
from devtools.hubserver import HubRepo, HubServer
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.contract import keys, sources

SIZE = 8 << 20
WEIGHTS = random.Random(7).randbytes(SIZE)  # noqa: S311 (test data, not secrets)
SOURCE = "hf://org/large"
KEY = keys.model_key(sources.parse_source(SOURCE))


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer([HubRepo.single("org/large", {"config.json": b'{"a": 1}', "weights.bin": WEIGHTS})]) as server:
        yield server


def environment(hub: HubServer, cache: Path, pod: str = "pod-0", **extra: str) -> dict[str, str]:
    settings = {
        "HF_ENDPOINT": hub.url,
        "MODELCACHE_RANGE_CHUNK": "1Mi",
        "MODELCACHE_WORKERS": "4",
        "MODELCACHE_RETRY_BASE": "10ms",
        **extra,
    }
    return fetcher_environment(SOURCE, cache, pod=pod, extra=settings)


def published_weights(cache: Path) -> bytes:
    marker = check_ready(CacheLayout(cache), KEY)
    assert marker is not None
    return (cache / "ready" / KEY / "weights.bin").read_bytes()


def chunk_requests(hub: HubServer) -> list[tuple[int, int]]:
    spans = []
    for header in hub.ranges:
        if header.startswith("bytes=") and header.count("-") == 1 and not header.endswith("-"):
            first, last = header.removeprefix("bytes=").split("-")
            spans.append((int(first), int(last)))
    return sorted(spans)


def test_a_large_file_comes_over_several_streams_at_once_and_is_verified(hub: HubServer, cache: Path) -> None:
    hub.faults.bytes_per_second = 4 << 20  # per stream: long enough for the streams to overlap
    result = run_fetcher(environment(hub, cache))
    assert result.returncode == 0, result.stderr
    assert published_weights(cache) == WEIGHTS
    spans = chunk_requests(hub)
    assert spans == [(i << 20, ((i + 1) << 20) - 1) for i in range(8)]  # each chunk asked once, exactly
    assert hub.max_streaming >= 3  # of 4 slots: parallel, not one after another
    assert hub.bytes_served == SIZE + len(b'{"a": 1}')  # no byte twice
    assert not list(cache.rglob("*.json.tmp"))
    assert not [p for p in (cache / ".modelcache").rglob("chunks/*.json")]  # the map goes with the attempt


def test_a_server_that_ignores_range_still_gets_the_whole_file_in_one_stream(hub: HubServer, cache: Path) -> None:
    hub.faults.ignore_range = True
    result = run_fetcher(environment(hub, cache))
    assert result.returncode == 0, result.stderr
    assert published_weights(cache) == WEIGHTS
    assert "does not serve ranges" in result.stderr


def chunk_map(cache: Path) -> dict[str, object] | None:
    for path in (cache / ".modelcache").rglob("chunks/*.json"):
        try:
            document: dict[str, object] = json.loads(path.read_bytes())
            return document
        except ValueError:
            continue
    return None


def test_after_sigkill_mid_chunk_the_next_fetcher_keeps_every_finished_chunk(
    hub: HubServer, cache: Path, tmp_path: Path
) -> None:
    hub.faults.bytes_per_second = 1 << 20  # each 1 MiB chunk takes about a second
    killed = start_fetcher(environment(hub, cache, MODELCACHE_WORKERS="2"), log=tmp_path / "killed.log")
    deadline = time.monotonic() + 60
    while len((chunk_map(cache) or {}).get("done", [])) < 2:  # type: ignore[arg-type]
        assert killed.poll() is None, (tmp_path / "killed.log").read_text()
        assert time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    kept = len(chunk_map(cache)["done"])  # type: ignore[arg-type,index]
    hub.faults.bytes_per_second = None
    hub.reset_counters()
    result = run_fetcher(environment(hub, cache, pod="pod-1"))
    assert result.returncode == 0, result.stderr
    assert published_weights(cache) == WEIGHTS
    assert f"resuming {kept} of 8 chunks" in result.stderr
    assert hub.bytes_served <= SIZE - kept * (1 << 20) + len(b'{"a": 1}')  # finished chunks never again


def test_a_chunk_cut_short_is_fetched_on_from_where_it_stopped(hub: HubServer, cache: Path) -> None:
    hub.faults.cut_next_after = 300_000
    result = run_fetcher(environment(hub, cache))
    assert result.returncode == 0, result.stderr
    assert published_weights(cache) == WEIGHTS
    assert hub.bytes_served == SIZE + len(b'{"a": 1}')  # the cut chunk went on from its byte 300000
    assert "retrying" in result.stderr, result.stderr


def test_a_corrupted_chunk_fails_verification_and_nothing_is_published(hub: HubServer, cache: Path) -> None:
    hub.faults.corrupt = {"weights.bin"}
    result = run_fetcher(environment(hub, cache))
    assert result.returncode == 5, result.stderr
    assert "weights.bin failed verification: sha256" in result.stderr
    assert check_ready(CacheLayout(cache), KEY) is None
    assert not list((cache / ".modelcache").rglob("weights.bin.part"))  # a bad download is not resumed


def test_connections_that_close_at_random_still_give_the_exact_file(hub: HubServer, cache: Path) -> None:
    hub.faults.drop_probability = 0.3
    result = run_fetcher(environment(hub, cache, MODELCACHE_RETRIES="40"))
    assert result.returncode == 0, result.stderr
    assert published_weights(cache) == WEIGHTS
    assert "retrying" in result.stderr, result.stderr
