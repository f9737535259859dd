"""The fetcher under faults of the machine it runs on: a volume that fills up mid-download, a filesystem
without record locks. Real processes, a real tmpfs, real errnos."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.fetcher_env import fetcher_environment, run_fetcher, start_fetcher
from devtools.hubserver import HubServer
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.contract import keys, sources
from tests.helpers import modelcache, private_mount_namespace

ROOT = Path(__file__).resolve().parent.parent.parent
BIG = keys.model_key(sources.parse_source("hf://tiny/big"))
TINY = keys.model_key(sources.parse_source("hf://tiny/model"))


UNSHARE = private_mount_namespace()


@pytest.mark.skipif(UNSHARE is None, reason="no private mount namespace here (needs root or user namespaces)")
def test_a_volume_that_fills_up_mid_download_keeps_what_is_staged_and_names_the_sizes(
    hub: HubServer, tmp_path: Path
) -> None:
    assert UNSHARE is not None
    cache = tmp_path / "cache"
    cache.mkdir()
    hub.faults.bytes_per_second = 2 << 20  # 4 MiB take ~2 s: the volume fills while weights.bin streams
    env = fetcher_environment("hf://tiny/big", cache, extra={"HF_ENDPOINT": hub.url, "PYTHONPATH": str(ROOT)})
    # Filled once config.json is downloaded and verified; then space is freed and the fetcher runs again.
    volume = [sys.executable, "-m", "devtools.small_volume", "64m", str(cache), "config.json", "--again", "--"]
    result = subprocess.run(
        [*UNSHARE, *volume, sys.executable, "-m", "fetcher"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "small_volume: filled" in result.stderr, result.stderr
    assert "small_volume: first run exited 6" in result.stderr, result.stderr
    (message,) = [line for line in result.stderr.splitlines() if "DiskFull" in line]
    assert "ran out of space while writing weights.bin: the model needs " in message
    assert re.search(r"needs [\d.]+ [KM]iB more but only [\d.]+ (B|KiB) is free \(\d+ > \d+ bytes\)", message), message
    assert "already on disk stay staged, and the next start resumes them" in message
    assert "nothing was published" in message
    left = dict(re.findall(r"small_volume: left (\S+) (\d+)", result.stderr))
    assert any(path.endswith("/data/config.json") for path in left), left  # verified, kept
    assert any(path.endswith("/data/weights.bin.part") and int(n) > 0 for path, n in left.items()), left
    assert result.returncode == 0, result.stderr  # the second run, with space again
    assert "resuming after" in result.stderr
    config_gets = [p for method, p, _ in hub.requests if method == "GET" and p.endswith("/config.json")]
    assert len(config_gets) == 1  # never downloaded again
    assert hub.bytes_served < 1.25 * (4 << 20)  # weights.bin resumed, not restarted


@pytest.fixture(scope="session")
def no_locks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preload library that makes every fcntl lock fail with ENOLCK (NFS with nolock, some FUSE)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the no-locks shim")
    library = tmp_path_factory.mktemp("shim") / "nolocks.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(library), str(ROOT / "devtools" / "native" / "nolocks.c"), "-ldl"],
        check=True,
    )
    return library


def test_without_record_locks_every_fetcher_still_gets_the_whole_model(
    hub: HubServer, cache: Path, tmp_path: Path, no_locks: Path
) -> None:
    pods = []
    for i in range(3):
        env = fetcher_environment(
            "hf://tiny/model", cache, pod=f"pod-{i}", extra={"HF_ENDPOINT": hub.url, "LD_PRELOAD": str(no_locks)}
        )
        pods.append(start_fetcher(env, log=tmp_path / f"pod-{i}.log"))
    for i, pod in enumerate(pods):
        assert pod.wait(120) == 0, (tmp_path / f"pod-{i}.log").read_text()
    logs = "".join((tmp_path / f"pod-{i}.log").read_text() for i in range(3))
    assert "file locks are not available on this filesystem" in logs or "cache hit" in logs
    assert check_ready(CacheLayout(cache), TINY) is not None


def test_without_record_locks_a_removal_is_refused_unless_forced(hub: HubServer, cache: Path, no_locks: Path) -> None:
    env = fetcher_environment("hf://tiny/model", cache, extra={"HF_ENDPOINT": hub.url})
    assert run_fetcher(env).returncode == 0
    refused = modelcache(cache, "rm", "hf://tiny/model", "--no-pod-check", env={"LD_PRELOAD": str(no_locks)})
    assert refused.returncode == 1
    assert "cannot be locked: this filesystem has no record locks" in refused.stdout
    assert check_ready(CacheLayout(cache), TINY) is not None
    forced = modelcache(cache, "rm", "hf://tiny/model", "--no-pod-check", "--force", env={"LD_PRELOAD": str(no_locks)})
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert check_ready(CacheLayout(cache), TINY) is None
    # The repository's blobs cannot be guarded against a download of the same repository here: they stay.
    assert "this filesystem has no record locks" in forced.stdout
    assert os.listdir(cache / "hub") == ["models--tiny--model"]


def wait_for_part(cache: Path, process: subprocess.Popen[bytes], log: Path) -> Path:
    deadline = time.monotonic() + 60
    while True:
        parts = [p for p in cache.rglob("weights.bin.part") if p.stat().st_size > 0]  # the 4 MiB file
        if parts:
            return parts[0]
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)


def test_sigterm_during_a_download_stops_at_once_keeps_what_was_staged_and_frees_the_lock(
    hub: HubServer, cache: Path, tmp_path: Path
) -> None:
    hub.faults.bytes_per_second = 512 << 10  # 4 MiB in ~8 s: SIGTERM comes mid-file
    env = fetcher_environment("hf://tiny/big", cache, pod="deleted", extra={"HF_ENDPOINT": hub.url})
    fetcher = start_fetcher(env, log=tmp_path / "deleted.log")
    part = wait_for_part(cache, fetcher, tmp_path / "deleted.log")
    fetcher.send_signal(signal.SIGTERM)
    assert fetcher.wait(timeout=5) == 143  # not the 30 s of a grace period ending in SIGKILL (137)
    message = (tmp_path / "deleted.termination-log").read_text()
    assert "Stopped: stopped by SIGTERM" in message
    assert "the next start resumes it" in message
    staged = part.stat().st_size
    assert staged > 0  # kept for the next pod
    hub.faults.bytes_per_second = None
    again = run_fetcher(fetcher_environment("hf://tiny/big", cache, pod="next", extra={"HF_ENDPOINT": hub.url}))
    assert again.returncode == 0, again.stderr
    assert "waiting" not in again.stderr  # the lock was free at once
    assert "resuming after" in again.stderr
    assert check_ready(CacheLayout(cache), BIG) is not None


def test_sigterm_while_waiting_for_another_pods_download_stops_at_once(
    hub: HubServer, cache: Path, tmp_path: Path
) -> None:
    hub.faults.bytes_per_second = 256 << 10
    holder = start_fetcher(
        fetcher_environment("hf://tiny/big", cache, pod="holder", extra={"HF_ENDPOINT": hub.url}),
        log=tmp_path / "holder.log",
    )
    wait_for_part(cache, holder, tmp_path / "holder.log")
    waiter_env = fetcher_environment(
        "hf://tiny/big", cache, pod="waiter", extra={"HF_ENDPOINT": hub.url, "MODELCACHE_LOCK_POLL": "100ms"}
    )
    waiter = start_fetcher(waiter_env, log=tmp_path / "waiter.log")
    deadline = time.monotonic() + 30
    while "waiting" not in (tmp_path / "waiter.log").read_text():
        assert time.monotonic() < deadline, (tmp_path / "waiter.log").read_text()
        time.sleep(0.05)
    waiter.send_signal(signal.SIGTERM)
    try:
        assert waiter.wait(timeout=5) == 143
        assert "Stopped" in (tmp_path / "waiter.termination-log").read_text()
        assert holder.poll() is None  # the other pod's download goes on
    finally:
        holder.kill()
        holder.wait()


MANY = {f"shard-{i:04d}.json": f'{{"shard": {i}}}'.encode() for i in range(3000)}


def test_a_kill_while_the_snapshot_is_built_leaves_nothing_once_the_next_run_publishes(tmp_path: Path) -> None:
    from huggingface_hub import scan_cache_dir

    from devtools.hubserver import HubRepo

    cache = tmp_path / "cache"
    snapshots = cache / "hub" / "models--tiny--many" / "snapshots"
    with HubServer([HubRepo.single("tiny/many", MANY)]) as hub:
        env = fetcher_environment("hf://tiny/many", cache, extra={"HF_ENDPOINT": hub.url})
        for _ in range(5):  # the window is a few hundred milliseconds of 3,000 links: catch it
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir()
            fetcher = start_fetcher(env, log=tmp_path / "killed.log")
            building: list[str] = []
            while fetcher.poll() is None and not building:
                with contextlib.suppress(FileNotFoundError):
                    building = [n for n in os.listdir(snapshots) if n.startswith(".")]
            fetcher.kill()
            fetcher.wait()
            if building:
                break
        assert building, "no fetcher was caught building its snapshot"
        again = run_fetcher(env)
        assert again.returncode == 0, again.stderr
    assert "downloaded 0 B in " in again.stderr  # it only published: every blob was already in place
    assert [n for n in os.listdir(snapshots) if n.startswith(".")] == []
    (repo,) = scan_cache_dir(cache / "hub").repos
    assert [len(r.files) for r in repo.revisions] == [len(MANY)]  # one revision, whole


@pytest.mark.parametrize(
    ("source", "extra"),
    [
        pytest.param("hf://org/model", {"HF_ENDPOINT": "http://127.0.0.1:9"}, id="hf"),
        pytest.param(
            "s3://models/llama",
            {
                "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                "AWS_ACCESS_KEY_ID": "x",
                "AWS_SECRET_ACCESS_KEY": "x",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
            },
            id="s3",
        ),
        pytest.param("https://127.0.0.1:9/m.bin#sha256=" + "a" * 64, {}, id="https"),
    ],
)
def test_an_unreachable_origin_is_named_in_the_message(source: str, extra: dict[str, str], cache: Path) -> None:
    """The endpoint a node failed to reach (a mirror, a custom S3 endpoint) is what an operator must check."""
    env = fetcher_environment(source, cache, extra={**extra, "MODELCACHE_RETRIES": "1"})
    result = run_fetcher(env)
    assert result.returncode == 8, result.stderr
    message = (cache.parent / "pod-0.termination-log").read_text()
    assert message.startswith("modelcache fetcher: TransferFailed: ")
    assert "http://127.0.0.1:9" in message or "https://127.0.0.1:9" in message
