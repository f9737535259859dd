"""Garbage collection: every leftover kind goes, what a live pod pins stays, and a dry run tells the truth.

Real fetchers populate the cache (from moto and the local Hub), `modelcache refresh` makes old versions,
live pods come from the API stand-in, and `modelcache purge` runs as its own process.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.fetcher_env import fetcher_environment, run_fetcher
from devtools.hubserver import HubServer
from devtools.kubeapi import KubeApi
from devtools.tinymodel import tiny_model_files
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready, read_marker
from modelcache.contract import keys, sources, wire
from tests.helpers import DAY, aws_env, modelcache, populate, s3_client, start_model_pod, write_kubeconfig

S3_SOURCE = "s3://gc-models/llama"
S3_KEY = keys.model_key(sources.parse_source(S3_SOURCE))
TINY = keys.model_key(sources.parse_source("hf://tiny/model"))


@pytest.fixture
def bucket(moto: str) -> Any:
    s3 = s3_client(moto)
    s3.create_bucket(Bucket="gc-models")
    s3.put_object(Bucket="gc-models", Key="llama/config.json", Body=b'{"v": 1}')
    s3.put_object(Bucket="gc-models", Key="llama/weights.bin", Body=os.urandom(1 << 20))
    yield s3
    for item in s3.list_objects_v2(Bucket="gc-models").get("Contents", []):
        s3.delete_object(Bucket="gc-models", Key=item["Key"])
    s3.delete_bucket(Bucket="gc-models")


def fetch_as(cache: Path, source: str, pod: str, tmp_path: Path, extra: dict[str, str]) -> Path:
    """One pod's init container: the fetcher with the pod's name and its own pin (its MODEL_PATH)."""
    pin_dir = tmp_path / f"pin-{pod}"
    pin_dir.mkdir(exist_ok=True)
    env = fetcher_environment(source, cache, pod=pod, extra={wire.PIN_PATH_ENV: str(pin_dir / "model"), **extra})
    result = run_fetcher(env)
    assert result.returncode == 0, result.stderr
    return pin_dir / "model"


def refresh(cache: Path, source: str, env: dict[str, str]) -> None:
    result = modelcache(cache, "refresh", source, env=env)
    assert result.returncode == 0, result.stderr


def purge(cache: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = modelcache(cache, "purge", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_a_refreshed_s3_model_leaves_no_old_version_behind(moto: str, bucket: Any, cache: Path) -> None:
    env = aws_env(moto)
    assert run_fetcher(fetcher_environment(S3_SOURCE, cache, extra=env)).returncode == 0
    layout = CacheLayout(cache)
    old = read_marker(layout, S3_KEY)
    bucket.put_object(Bucket="gc-models", Key="llama/config.json", Body=b'{"v": 2}')
    refresh(cache, S3_SOURCE, env)
    new = read_marker(layout, S3_KEY)
    assert old is not None
    assert new is not None
    assert new.path != old.path
    assert (cache / old.path / "weights.bin").exists()  # a refresh never touches what a pod may read

    report = purge(cache, "--no-pod-check", env=env)
    assert {item["path"] for item in report["leftovers"]} == {old.path}
    assert not (cache / old.path).exists()
    assert (cache / new.path / "config.json").read_bytes() == b'{"v": 2}'
    assert check_ready(layout, S3_KEY) is not None


def test_an_old_version_a_live_pod_pinned_stays_until_that_pod_is_gone(
    moto: str, bucket: Any, cache: Path, tmp_path: Path
) -> None:
    env = aws_env(moto)
    first = fetch_as(cache, S3_SOURCE, "llm-0", tmp_path, env)
    bucket.put_object(Bucket="gc-models", Key="llama/config.json", Body=b'{"v": 2}')
    refresh(cache, S3_SOURCE, env)
    second = fetch_as(cache, S3_SOURCE, "llm-1", tmp_path, env)  # started after the refresh: a hit on v2
    assert first.resolve() != second.resolve()
    with KubeApi(token="admin") as api:
        kubeconfig = {"KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", api.url, "admin")), **env}
        start_model_pod(api, S3_KEY, "llm-0")
        start_model_pod(api, S3_KEY, "llm-1")
        purge(cache, env=kubeconfig)
        assert (first / "config.json").read_bytes() == b'{"v": 1}'  # llm-0 still reads it through its pin
        api.set_status("Pod", "llm-0", {"phase": "Succeeded"}, namespace="serving")
        report = purge(cache, env=kubeconfig)
    assert str(first.resolve().relative_to(cache.resolve())) in {item["path"] for item in report["leftovers"]}
    assert not first.resolve().exists()
    assert (second / "config.json").read_bytes() == b'{"v": 2}'  # llm-1 runs on


def test_every_version_stays_while_a_live_pod_of_the_model_left_no_pin_record(
    moto: str, bucket: Any, cache: Path, tmp_path: Path
) -> None:
    env = aws_env(moto)
    assert run_fetcher(fetcher_environment(S3_SOURCE, cache, extra=env)).returncode == 0
    old = read_marker(CacheLayout(cache), S3_KEY)
    bucket.put_object(Bucket="gc-models", Key="llama/config.json", Body=b'{"v": 2}')
    refresh(cache, S3_SOURCE, env)
    assert old is not None
    with KubeApi(token="admin") as api:
        kubeconfig = {"KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", api.url, "admin")), **env}
        start_model_pod(api, S3_KEY, "started-by-an-older-fetcher")  # which version it reads is unknown
        purge(cache, env=kubeconfig)
        assert (cache / old.path).exists()
        api.set_status("Pod", "started-by-an-older-fetcher", {"phase": "Failed"}, namespace="serving")
        purge(cache, env=kubeconfig)
    assert not (cache / old.path).exists()


def test_a_hub_snapshot_only_a_gone_pod_pinned_goes_while_other_pods_of_the_repository_run(
    hub: HubServer, cache: Path, tmp_path: Path
) -> None:
    first = fetch_as(cache, "hf://tiny/model", "llm-0", tmp_path, {"HF_ENDPOINT": hub.url})
    hub.repos["tiny/model"].add_commit({**tiny_model_files(), "config.json": b'{"v": 2}'})  # the weights stay
    refresh(cache, "hf://tiny/model", {"HF_ENDPOINT": hub.url})
    second = fetch_as(cache, "hf://tiny/model", "llm-1", tmp_path, {"HF_ENDPOINT": hub.url})
    old_snapshot = first.resolve()
    with KubeApi(token="admin") as api:
        kubeconfig = {"KUBECONFIG": str(write_kubeconfig(tmp_path / "kubeconfig", api.url, "admin"))}
        start_model_pod(api, TINY, "llm-1")  # llm-0 is gone: only llm-1 runs, on the new commit
        report = purge(cache, env=kubeconfig)
    assert str(old_snapshot.relative_to(cache.resolve())) in {item["path"] for item in report["leftovers"]}
    assert not old_snapshot.exists()
    assert (second / "config.json").read_bytes() == b'{"v": 2}'
    assert (second / "model.safetensors").stat().st_size > 0  # a blob both commits share stays


def _age(path: Path, seconds: float) -> None:
    moment = time.time() - seconds
    os.utime(path, (moment, moment), follow_symlinks=False)


def _dead_attempt(layout: CacheLayout) -> Path:
    """A refresh of a ready model whose fetcher was killed long ago."""
    attempt = layout.staging_dir(TINY) / f"{'f' * 40}.0123456789ab"
    (attempt / "data").mkdir(parents=True)
    (attempt / "data" / "part.bin.part").write_bytes(b"x" * 1000)
    for path in (attempt, attempt.parent):
        _age(path, 2 * DAY)
    return attempt


def _unmarked_model(layout: CacheLayout) -> Path:
    """A publication (or a removal) that stopped before the marker: files, a link, no marker."""
    version = layout.store_dir("s3_other_prefix_fedcba9876543210", "0011223344556677")
    version.mkdir(parents=True)
    (version / "weights.bin").write_bytes(b"y" * 2000)
    link = layout.ready_link("s3_other_prefix_fedcba9876543210")
    link.symlink_to(os.path.relpath(version, link.parent))
    for path in (link, version, version.parent):
        _age(path, 2 * DAY)
    return version.parent


def _trash(layout: CacheLayout) -> Path:
    entry = layout.trash / "weights.0123456789ab"
    entry.mkdir(parents=True)
    (entry / "half-deleted.bin").write_bytes(b"z" * 300)
    return entry


def _marker_tombstone(layout: CacheLayout) -> Path:
    tombstone = layout.markers / f".{TINY}.json.removing-0123abcd"
    tombstone.write_bytes(b"{}")
    return tombstone


def _lock_moved_aside(layout: CacheLayout) -> Path:
    stale = layout.locks / f"{TINY}.lock.stale-1700000000-42"
    stale.write_bytes(b"")
    _age(stale, 2 * DAY)
    return stale


def _old_outcome(layout: CacheLayout) -> Path:
    record = layout.outcomes / f"1700000000000000000-42-{TINY}.counted"
    record.write_text(json.dumps({"kind": "hit", "key": TINY, "source": "hf://tiny/model@main", "at": 1.7e9}))
    _age(record, 8 * DAY)
    return record


def _pin_of_a_gone_pod(layout: CacheLayout) -> Path:
    record = layout.pins / "0123456789abcdef0123456789abcdef.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"namespace": "serving", "pod": "gone-0", "key": TINY, "path": "hub/x", "at": 1.7e9}))
    _age(record, 2 * DAY)
    return record


def _snapshot_being_built(layout: CacheLayout) -> Path:
    repo = layout.hub_repo("tiny/model")
    building = repo.snapshots / f".{'0' * 40}.0123456789ab.0123456789ab.tmp"
    building.mkdir()
    (building / "config.json").symlink_to("../../blobs/" + "1" * 40)
    _age(building, 2 * DAY)
    return building


LEFTOVERS = {
    "dead-download-attempt": _dead_attempt,
    "model-that-never-became-ready": _unmarked_model,
    "trash-of-an-interrupted-removal": _trash,
    "marker-tombstone-of-an-interrupted-removal": _marker_tombstone,
    "lock-file-moved-aside-by-a-takeover": _lock_moved_aside,
    "old-outcome-record": _old_outcome,
    "pin-record-of-a-pod-gone": _pin_of_a_gone_pod,
    "snapshot-of-an-interrupted-publication": _snapshot_being_built,
}


@pytest.mark.parametrize("kind", sorted(LEFTOVERS))
def test_each_kind_of_leftover_is_listed_by_a_dry_run_then_removed(hub: HubServer, cache: Path, kind: str) -> None:
    populate(hub, cache)
    layout = CacheLayout(cache)
    leftover = LEFTOVERS[kind](layout)
    relative = str(leftover.relative_to(cache))

    dry = purge(cache, "--no-pod-check", "--dry-run")
    assert relative in {item["path"] for item in dry["leftovers"]}, dry["leftovers"]
    assert leftover.exists() or leftover.is_symlink()

    done = purge(cache, "--no-pod-check")
    assert relative in {item["path"] for item in done["leftovers"]}
    assert not leftover.exists()
    assert not leftover.is_symlink()
    assert check_ready(layout, TINY) is not None  # the model in use by nobody but within its TTL stays


def test_a_dry_run_shows_exactly_what_the_real_run_removes_and_frees(
    hub: HubServer, cache: Path, tmp_path: Path
) -> None:
    first = fetch_as(cache, "hf://tiny/model", "llm-0", tmp_path, {"HF_ENDPOINT": hub.url})
    hub.repos["tiny/model"].add_commit({"config.json": b'{"v": 2}', "extra.bin": b"e" * 4096})
    refresh(cache, "hf://tiny/model", {"HF_ENDPOINT": hub.url})
    layout = CacheLayout(cache)
    for make in LEFTOVERS.values():
        make(layout)
    dry = purge(cache, "--no-pod-check", "--dry-run")
    done = purge(cache, "--no-pod-check")
    listed = sorted((item["path"], item["bytes"]) for item in dry["leftovers"])
    removed = sorted((item["path"], item["bytes"]) for item in done["leftovers"])
    assert listed == removed
    assert dry["freed_bytes"] == done["freed_bytes"] > 0
    assert str(first.resolve().relative_to(cache.resolve())) in {path for path, _ in removed}
    for path, _ in removed:
        assert not os.path.lexists(cache / path), path
    assert purge(cache, "--no-pod-check", "--dry-run")["leftovers"] == []  # nothing left to find
