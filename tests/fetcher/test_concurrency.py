"""Many pods, one cache: real fetcher processes on one directory, a sampler watching what apps would see."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from devtools.fetcher_env import fetcher_environment, run_fetcher, start_fetcher
from devtools.hubserver import HubServer
from modelcache.cache.layout import CacheLayout
from modelcache.cache.outcomes import read_outcomes
from modelcache.contract import keys, sources, wire
from modelcache.contract.quantities import format_bytes

SOURCE = "hf://tiny/big"
PODS = 8


def expected_sizes(hub: HubServer) -> dict[str, int]:
    repo = hub.repos["tiny/big"]
    return {path: item.size for path, item in repo.commits[repo.main].items()}


def model_dir(cache: Path) -> Path:
    key = keys.model_key(sources.parse_source(SOURCE))
    return Path(wire.model_path(str(cache), key))


def incomplete(cache: Path, sizes: dict[str, int]) -> bool:
    """What an app would see right now: True if a file is missing or short."""
    try:
        return any((model_dir(cache) / path).stat().st_size != size for path, size in sizes.items())
    except OSError:
        return True


def largest_part(cache: Path) -> int:
    """Bytes in the largest partial download now (a .part may be renamed while we look)."""
    sizes = [0]
    for part in (cache / ".modelcache" / "staging").rglob("*.part"):
        try:
            sizes.append(part.stat().st_size)
        except FileNotFoundError:
            continue
    return max(sizes)


def run_pods(hub: HubServer, cache: Path, **extra: str) -> tuple[list[int], int, int, list[str]]:
    """Start PODS fetchers at once; sample the model after the first success. (codes, samples, bad, logs)"""
    sizes = expected_sizes(hub)
    settings = {
        "HF_ENDPOINT": hub.url,
        "MODELCACHE_LOCK_POLL": "50ms",
        "MODELCACHE_LOCK_LOG_EVERY": "500ms",
        "MODELCACHE_HEARTBEAT": "200ms",
        **extra,
    }
    logs = [cache.parent / f"pod-{i}.log" for i in range(PODS)]
    processes = [
        start_fetcher(fetcher_environment(SOURCE, cache, pod=f"pod-{i}", extra=settings), log=logs[i])
        for i in range(PODS)
    ]
    samples = bad = 0
    first_success = False
    deadline = time.monotonic() + 120
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        first_success = first_success or any(p.poll() == 0 for p in processes)
        if first_success:
            samples += 1
            bad += incomplete(cache, sizes)
        time.sleep(0.002)
    for process in processes:
        if process.poll() is None:
            process.kill()
    codes = [p.wait() for p in processes]
    for _ in range(20):  # a few samples after the last exit too
        samples += 1
        bad += incomplete(cache, sizes)
    return codes, samples, bad, [log.read_text() for log in logs]


def test_eight_pods_share_one_download(hub: HubServer, cache: Path) -> None:
    hub.faults.bytes_per_second = 2 << 20  # ~2 s for the model, so the pods overlap and waiters log
    codes, samples, bad, logs = run_pods(hub, cache)
    assert codes == [0] * PODS, logs
    model_bytes = sum(expected_sizes(hub).values())
    assert hub.bytes_served == model_bytes  # the origin sent the model once
    assert samples > 20
    assert bad == 0
    assert sum("downloaded" in log for log in logs) == 1
    assert any("held by pod serving/pod-" in log for log in logs)  # waiters say who has the lock


def test_without_the_lock_every_pod_still_gets_a_complete_model(hub: HubServer, cache: Path) -> None:
    """As on a filesystem whose locks are a no-op: duplicate downloads, never a partial model."""
    hub.faults.bytes_per_second = 8 << 20
    codes, samples, bad, logs = run_pods(hub, cache, MODELCACHE_LOCKING="false")
    assert codes == [0] * PODS, logs
    assert samples > 20
    assert bad == 0
    assert hub.bytes_served >= sum(expected_sizes(hub).values())


def test_a_killed_download_resumes_where_it_stopped(hub: HubServer, cache: Path) -> None:
    hub.faults.bytes_per_second = 1 << 20
    env = fetcher_environment(SOURCE, cache, extra={"HF_ENDPOINT": hub.url})
    process = start_fetcher(env)
    deadline = time.monotonic() + 60
    while largest_part(cache) < 1 << 20:
        if time.monotonic() > deadline:
            pytest.fail("the download did not start")
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not list((cache / ".modelcache" / "markers").iterdir())  # never a marker for a partial model
    assert not (cache / "ready").exists() or not list((cache / "ready").iterdir())
    hub.reset_counters()
    hub.faults.bytes_per_second = None
    result = run_fetcher(env)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    model_bytes = sum(expected_sizes(hub).values())
    assert 0 < hub.bytes_served < model_bytes - (1 << 20) + 4096  # at least the first MiB was not fetched again
    assert not incomplete(cache, expected_sizes(hub))
    # The numbers it reports are this run's: fetched and resumed apart, in the message and the record.
    (record,) = [r for _, r in read_outcomes(CacheLayout(cache), counted=False) if r.kind == "downloaded"]
    assert record.bytes_downloaded == hub.bytes_served
    assert record.bytes_resumed == model_bytes - hub.bytes_served >= 1 << 20
    message = (cache.parent / "pod-0.termination-log").read_text()
    assert f"downloaded {format_bytes(record.bytes_downloaded)} in " in message
    assert f", resumed {format_bytes(record.bytes_resumed)} already staged" in message


def test_a_server_that_ignores_range_still_gives_a_correct_model(hub: HubServer, cache: Path) -> None:
    hub.faults.bytes_per_second = 1 << 20
    env = fetcher_environment(SOURCE, cache, extra={"HF_ENDPOINT": hub.url})
    process = start_fetcher(env)
    deadline = time.monotonic() + 60
    while largest_part(cache) < 100_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    hub.faults.bytes_per_second = None
    hub.faults.ignore_range = True
    result = run_fetcher(env)
    assert result.returncode == 0, result.stderr
    assert "does not resume" in result.stderr
    assert not incomplete(cache, expected_sizes(hub))


def test_a_waiting_pod_finishes_when_the_holder_is_killed(hub: HubServer, cache: Path) -> None:
    """SIGKILL releases an fcntl lock at once: the waiter takes over and resumes the download."""
    hub.faults.bytes_per_second = 1 << 20
    settings = {"HF_ENDPOINT": hub.url, "MODELCACHE_LOCK_POLL": "50ms"}
    holder = start_fetcher(fetcher_environment(SOURCE, cache, pod="holder", extra=settings))
    record = cache / ".modelcache" / "owners" / f"{keys.model_key(sources.parse_source(SOURCE))}.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not record.exists():  # the record itself, not its temporary file
        time.sleep(0.02)
    waiter = start_fetcher(
        fetcher_environment(SOURCE, cache, pod="waiter", extra=settings), log=cache.parent / "waiter.log"
    )
    waiter_log = cache.parent / "waiter.log"
    while time.monotonic() < deadline and "waiting" not in waiter_log.read_text():
        time.sleep(0.02)
    assert "held by pod serving/holder" in waiter_log.read_text()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    hub.faults.bytes_per_second = None
    assert waiter.wait(timeout=120) == 0, (cache.parent / "waiter.log").read_text()
    assert not incomplete(cache, expected_sizes(hub))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_fails_fast_with_both_numbers_and_cleans_up(hub: HubServer, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        cache = small / "cache"
        cache.mkdir()
        result = run_fetcher(fetcher_environment(SOURCE, cache, extra={"HF_ENDPOINT": hub.url}))
        assert result.returncode == 6, result.stderr
        message = (small / "pod-0.termination-log").read_text()
        assert "4.0 MiB more on the cache volume but only" in message
        assert not list((cache / ".modelcache" / "staging").rglob("*.part"))
        assert hub.bytes_served == 0  # failed before downloading anything
    finally:
        subprocess.run(["umount", str(small)], check=False)
