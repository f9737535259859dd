"""Pods of different workloads, under different UIDs, on one volume: real processes under real UIDs.

Needs root (to switch users) and a private mount namespace (devtools.as_user makes the interpreter
reachable for other UIDs there).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubServer
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.contract import keys, sources, wire

ROOT = Path(__file__).resolve().parent.parent.parent
BIG = keys.model_key(sources.parse_source("hf://tiny/big"))
SIZE = 4 << 20 | 2  # weights.bin and config.json
NAMESPACE = ["unshare", "--mount", "--propagation", "private"]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare to run as other UIDs"
)


@pytest.fixture
def volume() -> Iterator[Path]:
    """A cache every UID can reach (pytest's own temporary directories are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="modelcache-uids-"))
    base.chmod(0o777)
    cache = base / "cache"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    yield cache
    shutil.rmtree(base)


def start_as(uid: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    as_user = [sys.executable, "-m", "devtools.as_user", str(uid), str(uid), "--"]
    with log.open("wb") as out:
        return subprocess.Popen(
            [*NAMESPACE, *as_user, sys.executable, "-m", "fetcher"],
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=out,
            cwd=ROOT,
        )


def part_size(cache: Path) -> int:
    sizes = [0]
    for part in (cache / ".modelcache" / "staging").rglob("weights.bin.part"):
        try:
            sizes.append(part.stat().st_size)
        except FileNotFoundError:
            continue
    return max(sizes)


def test_a_pod_of_another_uid_resumes_what_a_killed_holder_staged(hub: HubServer, volume: Path) -> None:
    """Three pods of three UIDs; the first two are killed mid-download. The origin serves the model ~once."""
    hub.faults.bytes_per_second = 1 << 20  # 4 MiB in ~4 s
    logs = [volume.parent / f"uid-{uid}.log" for uid in (1001, 1002, 1003)]
    for i, (uid, killed_at) in enumerate(((1001, 1 << 20), (1002, 2 << 20))):
        env = fetcher_environment("hf://tiny/big", volume, pod=f"pod-{uid}", extra={"HF_ENDPOINT": hub.url})
        holder = start_as(uid, env, logs[i])
        deadline = time.monotonic() + 60
        while part_size(volume) < killed_at:
            assert holder.poll() is None, logs[i].read_text()
            assert time.monotonic() < deadline, logs[i].read_text()
            time.sleep(0.01)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    hub.faults.bytes_per_second = None
    env = fetcher_environment("hf://tiny/big", volume, pod="pod-1003", extra={"HF_ENDPOINT": hub.url})
    last = start_as(1003, env, logs[2])
    assert last.wait(120) == 0, logs[2].read_text()
    second, third = logs[1].read_text(), logs[2].read_text()
    assert "resuming the interrupted download" in second
    assert "weights.bin: resuming after" in second
    assert "weights.bin: resuming after" in third
    assert hub.bytes_served < 1.1 * SIZE  # not 1.9x: nothing was downloaded twice but a chunk in flight
    marker = check_ready(CacheLayout(volume), BIG)
    assert marker is not None
    model = Path(wire.model_path(str(volume), BIG))
    repo = hub.repos["tiny/big"]
    for path, item in repo.commits[repo.main].items():
        assert (model / path).read_bytes() == item.data
    assert (model / "weights.bin").resolve().stat().st_uid in (1001, 1002, 1003)


def test_a_pod_of_another_uid_keeps_the_finished_chunks_of_a_killed_ranged_download(volume: Path) -> None:
    """A large file in ranges: UID 1001 is killed with chunks done; UID 1002 copies them, fetches the rest."""
    import json
    import random

    from devtools.hubserver import HubRepo

    weights = random.Random(3).randbytes(8 << 20)  # noqa: S311 (test data)
    settings = {"MODELCACHE_RANGE_CHUNK": "1Mi", "MODELCACHE_WORKERS": "2", "MODELCACHE_RETRY_BASE": "10ms"}
    with HubServer([HubRepo.single("org/large", {"weights.bin": weights})]) as hub:
        hub.faults.bytes_per_second = 1 << 20
        env = fetcher_environment("hf://org/large", volume, pod="pod-1001", extra={"HF_ENDPOINT": hub.url, **settings})
        holder = start_as(1001, env, volume.parent / "uid-1001.log")

        def done() -> int:
            for path in (volume / ".modelcache").rglob("chunks/*.json"):
                try:
                    return len(json.loads(path.read_bytes())["done"])
                except ValueError:
                    continue
            return 0

        deadline = time.monotonic() + 60
        while done() < 2:
            assert holder.poll() is None, (volume.parent / "uid-1001.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        kept = done()
        hub.faults.bytes_per_second = None
        hub.reset_counters()
        env = fetcher_environment("hf://org/large", volume, pod="pod-1002", extra={"HF_ENDPOINT": hub.url, **settings})
        follower = start_as(1002, env, volume.parent / "uid-1002.log")
        assert follower.wait(timeout=120) == 0, (volume.parent / "uid-1002.log").read_text()
        log = (volume.parent / "uid-1002.log").read_text()
        assert f"resuming {kept} of 8 chunks" in log
        assert "another UID's download" in log
        assert hub.bytes_served <= (8 - kept) << 20  # the finished chunks are never fetched again
    key = keys.model_key(sources.parse_source("hf://org/large"))
    assert check_ready(CacheLayout(volume), key) is not None
    assert (Path(wire.model_path(str(volume), key)) / "weights.bin").read_bytes() == weights
