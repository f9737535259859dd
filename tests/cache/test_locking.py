"""The lock protocol with real processes: waiting logs, timeouts, release on death, stale takeover."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache.cache.layout import CacheLayout
from modelcache.cache.locking import LockState, ModelLock
from modelcache.cache.owners import Identity
from modelcache.cache.patience import LockSettings
from modelcache.contract.errors import LockTimeoutError

KEY = "hf_org_model_main_0123456789abcdef"
HOLDER = """
import sys, time
from pathlib import Path
from modelcache.cache.layout import CacheLayout
from modelcache.cache.patience import LockSettings
from modelcache.cache.owners import Identity, Progress
from modelcache.cache.locking import ModelLock
layout = CacheLayout(Path(sys.argv[1])); layout.ensure()
lock = ModelLock(layout, sys.argv[2], identity=Identity.here(pod="holder", namespace="serving", node="node-h"),
                 settings=LockSettings(heartbeat_every=0.1))
lock.acquire()
progress = Progress(total=1000); progress.add(400)
lock.start_heartbeat(progress, attempt="a1")
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), KEY], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


def waiter(tmp_path: Path, **settings: float) -> ModelLock:
    defaults = {"timeout": 30.0, "poll": 0.02, "log_every": 0.1, "stale_after": 60.0, "takeover_after": 0.0}
    return ModelLock(
        CacheLayout(tmp_path),
        KEY,
        identity=Identity.here(pod="waiter", namespace="serving", node="node-w"),
        settings=LockSettings(**{**defaults, **settings}),  # type: ignore[arg-type]
    )


def test_a_waiter_says_who_holds_the_lock_and_gives_up_at_the_timeout(
    tmp_path: Path, holder: subprocess.Popen[str], caplog: pytest.LogCaptureFixture
) -> None:
    lock = waiter(tmp_path, timeout=0.5)
    with caplog.at_level(logging.INFO, logger="modelcache.cache.locking"), pytest.raises(LockTimeoutError) as caught:
        lock.acquire()
    assert "held by pod serving/holder on node node-h" in str(caught.value)
    assert "MODELCACHE_FETCHER_LOCK_TIMEOUT" in str(caught.value)
    assert any("400 B of 1000 B (40 %)" in r.getMessage() for r in caplog.records)


def test_a_killed_holder_releases_the_lock_at_once(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = waiter(tmp_path, timeout=5)
    assert lock.acquire() is LockState.HELD
    lock.release()


def test_a_holder_without_heartbeat_is_reported_then_taken_over(
    tmp_path: Path, holder: subprocess.Popen[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A stopped process keeps its lock but stops its heartbeat, as a holder on a dead node does."""
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        lock = waiter(tmp_path, stale_after=0.3, takeover_after=0.8)
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="modelcache.cache.locking"):
            state = lock.acquire()
        assert state is LockState.TAKEN_OVER
        assert time.monotonic() - started >= 0.8
        messages = [r.getMessage() for r in caplog.records]
        assert any("STALE: no heartbeat" in m for m in messages)
        assert any("taking over the lock" in m for m in messages)
        assert list((tmp_path / ".modelcache" / "locks").glob(f"{KEY}.lock.stale-*"))
        # A second waiter now waits on the new lock file, not on the stale holder's.
        second = waiter(tmp_path, timeout=0.3)
        with pytest.raises(LockTimeoutError, match="held by pod serving/waiter"):
            second.acquire()
        lock.release()
    finally:
        os.kill(holder.pid, signal.SIGCONT)


def test_the_lock_can_be_disabled(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    lock = waiter(tmp_path, timeout=0.1)
    disabled = ModelLock(CacheLayout(tmp_path), KEY, identity=lock.identity, settings=LockSettings(enabled=False))
    assert disabled.acquire() is LockState.DISABLED


def test_waiters_poll_often_at_first_and_back_off_to_the_setting() -> None:
    """A download that ends 2 s after a waiter came is noticed within a tenth of that, not a second later."""
    from modelcache.cache.locking import FIRST_POLL, poll_interval

    assert poll_interval(0.0, 1.0) == FIRST_POLL
    assert poll_interval(2.0, 1.0) == pytest.approx(0.2)
    assert poll_interval(60.0, 1.0) == 1.0  # a long wait polls as the setting says
    assert poll_interval(60.0, 0.1) == 0.1  # and never slower than it


def test_a_long_wait_costs_a_bounded_number_of_extra_tries() -> None:
    from modelcache.cache.locking import poll_interval

    def tries(wait: float, poll: float) -> int:
        elapsed, count = 0.0, 0
        while elapsed < wait:
            elapsed += poll_interval(elapsed, poll)
            count += 1
        return count

    for wait in (60.0, 600.0, 3600.0):
        assert tries(wait, 1.0) <= wait / 1.0 + 40  # the same as a fixed 1 s poll, plus a constant
    assert tries(3600.0, 1.0) - tries(600.0, 1.0) == pytest.approx(3000, abs=2)  # then one a second


def test_a_waiter_between_long_polls_wakes_when_the_holder_lets_go(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    """Deep into a long wait the loop sleeps a whole MODELCACHE_LOCK_POLL between tries (60 s here, on
    a clock that runs 10^6 times fast, so that the loop gets there after its first try); the release still wakes it."""
    import threading

    started = time.monotonic()
    lock = ModelLock(
        CacheLayout(tmp_path),
        KEY,
        identity=Identity.here(pod="waiter", namespace="serving", node="node-w"),
        settings=LockSettings(timeout=1e9, poll=60.0, log_every=1e9, stale_after=1e9, takeover_after=0.0),
        clock=lambda: started + (time.monotonic() - started) * 1e6,
    )
    states: list[LockState] = []
    thread = threading.Thread(target=lambda: states.append(lock.acquire()), daemon=True)
    thread.start()
    time.sleep(1.0)  # the waiter is asleep in a 30-90 s pause by now
    assert not states
    os.kill(holder.pid, signal.SIGKILL)  # the kernel drops the holder's lock
    holder.wait()
    thread.join(timeout=10)
    assert states == [LockState.HELD], "the waiter slept through the release"
    lock.release()
