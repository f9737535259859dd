"""Leader election by client-go's rules: candidates in real processes, with real skewed wall clocks.

Each candidate is `python -m devtools.lease_candidate` against the API stand-in; libfaketime moves its
wall clock (CLOCK_REALTIME) ahead or behind, leaving CLOCK_MONOTONIC alone, so the lines the candidates
print can be laid side by side on the machine's one monotonic clock. Short timings keep the test fast:
a 3 s lease, a 2 s renew deadline, a 0.5 s retry period.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libfaketime
import pytest

from devtools.faultproxy import FaultProxy, Rule
from devtools.kubeapi import KubeApi
from modelcache.runtime.leader import LeaderElector
from modelcache.runtime.timings import LeaseTimings
from tests.helpers import write_kubeconfig

DURATION, DEADLINE, RETRY = 3.0, 2.0, 0.5
ROOT = Path(__file__).resolve().parent.parent.parent


class Candidate:
    def __init__(self, name: str, kubeconfig: Path, *, skew: str = "") -> None:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT)}
        if skew:
            _, preload = libfaketime.get_reload_information()
            env |= {**preload, "FAKETIME": skew}
        args = [sys.executable, "-m", "devtools.lease_candidate", name, str(DURATION), str(DEADLINE), str(RETRY)]
        self.process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
        self.lines: list[dict[str, object]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def leading(self) -> bool:
        return bool(self.lines) and self.lines[-1]["leading"] is True

    def wait_until(self, what: str, leading: bool, seconds: float) -> float:
        deadline = time.monotonic() + seconds
        while self.leading() is not leading:
            assert self.process.poll() is None, f"{what}: the candidate exited"
            assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
            time.sleep(0.02)
        return float(str(self.lines[-1]["monotonic"]))

    def terms(self, *, killed_at: float = float("inf")) -> list[tuple[float, float]]:
        """(from, to) on the machine's monotonic clock, for every time it led (a killed one led until then)."""
        spans, start = [], None
        for line in self.lines:
            at = float(str(line["monotonic"]))
            if line["leading"] and start is None:
                start = at
            elif not line["leading"] and start is not None:
                spans.append((start, at))
                start = None
        if start is not None:
            spans.append((start, killed_at))
        return spans


@pytest.fixture
def api() -> Iterator[KubeApi]:
    with KubeApi(token="t") as server:
        yield server


@pytest.fixture
def candidates() -> Iterator[list[Candidate]]:
    started: list[Candidate] = []
    yield started
    for candidate in started:
        if candidate.process.poll() is None:
            candidate.process.kill()
        candidate.process.wait()


def never_both(first: Candidate, second: Candidate, *, first_killed_at: float = float("inf")) -> None:
    for a_start, a_end in first.terms(killed_at=first_killed_at):
        for b_start, b_end in second.terms():
            assert a_end <= b_start or b_end <= a_start, (first.terms(), second.terms())


@pytest.mark.parametrize("skew", ["+15s", "-15s"], ids=["clock-15s-ahead", "clock-15s-behind"])
def test_a_candidate_with_a_skewed_clock_never_takes_a_live_lease_and_takes_a_dead_one_in_time(
    api: KubeApi, tmp_path: Path, candidates: list[Candidate], skew: str
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, "t")
    holder = Candidate("holder", kubeconfig)
    candidates.append(holder)
    holder.wait_until("the first candidate leads", True, 15)
    skewed = Candidate("skewed", kubeconfig, skew=skew)
    candidates.append(skewed)
    time.sleep(3 * DURATION)  # three whole leases: a candidate trusting the holder's renewTime would steal it
    assert skewed.process.poll() is None
    assert not skewed.leading()
    assert holder.leading()

    holder.process.send_signal(signal.SIGKILL)  # a dead holder: no release, its record just stops changing
    killed = time.monotonic()
    took_over = skewed.wait_until("the skewed candidate takes over", True, 3 * DURATION)
    assert DURATION - RETRY <= took_over - killed <= DURATION + 3 * RETRY  # a lease of its own clock, not more
    never_both(holder, skewed, first_killed_at=killed)


def test_a_leader_that_cannot_renew_stops_acting_before_anyone_takes_over(
    api: KubeApi, tmp_path: Path, candidates: list[Candidate]
) -> None:
    direct = write_kubeconfig(tmp_path / "kubeconfig", api.url, "t")
    with FaultProxy(api.url).running() as proxy:
        through_proxy = write_kubeconfig(tmp_path / "proxied", proxy.url, "t")
        cut_off = Candidate("cut-off", through_proxy)
        candidates.append(cut_off)
        cut_off.wait_until("the proxied candidate leads", True, 15)
        other = Candidate("other", direct)
        candidates.append(other)
        time.sleep(DURATION)
        assert not other.leading()
        proxy.rules.append(Rule("PUT", "/leases/test-lease", times=10_000, status=503))  # renewals fail from now
        stopped = cut_off.wait_until("the leader gives up", False, DEADLINE + 2)
        started = other.wait_until("the other takes over", True, 3 * DURATION)
    assert started - stopped > 0.5  # the old leader had stopped acting well before the new one began
    never_both(cut_off, other)


def test_the_identity_is_the_pod_name_and_a_unique_suffix(api: KubeApi) -> None:
    timings = LeaseTimings(DURATION, DEADLINE, RETRY)
    first = LeaderElector(api.client(), namespace="modelcache-system", name="x", identity="pod-0", timings=timings)
    again = LeaderElector(api.client(), namespace="modelcache-system", name="x", identity="pod-0", timings=timings)
    assert first.identity.startswith("pod-0_")
    assert first.identity != again.identity  # a restarted pod of the same name is another candidate
    assert first.try_acquire_or_renew()
    assert not again.try_acquire_or_renew()
    lease = api.get("Lease", "x", "modelcache-system")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == first.identity
    first.release()
    assert again.try_acquire_or_renew()  # a released lease passes at once
