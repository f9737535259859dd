"""The removal protocol with real processes: a pod starting mid-removal, live pods, shared Hub blobs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.fetcher_env import fetcher_environment, start_fetcher
from devtools.hubserver import HubServer
from modelcache.cache.collection import Ages, Collected, collect, plan_collection
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.cache.owners import Identity
from modelcache.cache.pins import LiveUse
from modelcache.cache.removal import RemovalCheck, RemovalRefusedError, remove_model
from modelcache.cache.usage import usage_stamp
from modelcache.contract import keys, sources
from tests.helpers import age_use, populate

TINY = keys.model_key(sources.parse_source("hf://tiny/model"))
JSON_ONLY = keys.model_key(sources.parse_source("hf://tiny/model"), ("*.json",))
ME = Identity.here(pod="modelcache-purge", namespace="modelcache-system", node="node-p")
NOBODY = LiveUse()  # no live pod


def test_a_pod_that_starts_during_a_removal_keeps_the_model(hub: HubServer, cache: Path, tmp_path: Path) -> None:
    populate(hub, cache)
    layout = CacheLayout(cache)
    started: list[subprocess.Popen[bytes]] = []

    def a_pod_starts_now() -> None:
        """While the API is asked for live pods, a new pod's fetcher records its use and checks the model."""
        before = usage_stamp(layout, TINY)
        env = fetcher_environment("hf://tiny/model", cache, pod="late", extra={"HF_ENDPOINT": hub.url})
        started.append(start_fetcher(env, log=tmp_path / "late.log"))
        deadline = time.monotonic() + 30
        while usage_stamp(layout, TINY) == before:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def recheck() -> str | None:
        a_pod_starts_now()
        return None  # the API has not seen the pod yet: only its use on the volume tells

    with pytest.raises(RemovalRefusedError, match="used while being removed"):
        remove_model(layout, TINY, reason="test", identity=ME, use=NOBODY, check=RemovalCheck(recheck=recheck))
    assert check_ready(layout, TINY) is not None  # the marker is back, nothing was deleted
    assert started[0].wait(60) == 0, (tmp_path / "late.log").read_text()
    assert (
        "cache hit" in (tmp_path / "late.log").read_text()
        or "ready after waiting" in (tmp_path / "late.log").read_text()
    )


def test_a_pod_seen_by_the_last_api_check_keeps_the_model(hub: HubServer, cache: Path) -> None:
    populate(hub, cache)
    layout = CacheLayout(cache)
    with pytest.raises(RemovalRefusedError, match=r"a pod started using it meanwhile \(serving/llm-3\)"):
        remove_model(
            layout,
            TINY,
            reason="test",
            identity=ME,
            use=NOBODY,
            check=RemovalCheck(recheck=lambda: "a pod started using it meanwhile (serving/llm-3)"),
        )
    assert check_ready(layout, TINY) is not None


def test_an_api_failure_during_the_last_check_keeps_the_model_ready(hub: HubServer, cache: Path) -> None:
    populate(hub, cache)
    layout = CacheLayout(cache)

    def api_down() -> str | None:
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(RemovalRefusedError, match=r"could not re-check the live pods \(ConnectionRefusedError"):
        remove_model(layout, TINY, reason="test", identity=ME, use=NOBODY, check=RemovalCheck(recheck=api_down))
    assert check_ready(layout, TINY) is not None  # the marker moved aside is back


def test_a_model_used_after_it_was_chosen_is_kept(hub: HubServer, cache: Path) -> None:
    populate(hub, cache)  # used just now
    with pytest.raises(RemovalRefusedError, match="was used 0 s ago, after it was chosen"):
        remove_model(
            CacheLayout(cache), TINY, reason="test", identity=ME, use=NOBODY, check=RemovalCheck(idle_for=3600)
        )


HOLD_GUARD = """
import sys, time
from pathlib import Path
from modelcache.cache.layout import CacheLayout
from modelcache.cache.locking import RepoGuard
guard = RepoGuard(CacheLayout(Path(sys.argv[1])), "models--tiny--model")
assert guard.share()
print("shared", flush=True)
time.sleep(600)
"""


def test_shared_blobs_wait_while_a_download_of_the_same_repository_runs(hub: HubServer, cache: Path) -> None:
    populate(hub, cache)
    layout = CacheLayout(cache)
    repo = cache / "hub" / "models--tiny--model"
    downloading = subprocess.Popen([sys.executable, "-c", HOLD_GUARD, str(cache)], stdout=subprocess.PIPE, text=True)
    try:
        assert downloading.stdout is not None
        assert downloading.stdout.readline().strip() == "shared"
        removed = remove_model(layout, TINY, reason="test", identity=ME, use=NOBODY)
        assert check_ready(layout, TINY) is None  # no longer ready: no new pod will use it
        assert removed.deferred
        assert "stay until the next round" in removed.deferred[0]
        assert any((repo / "blobs").iterdir())  # the other download may count on these
        assert collect_now(layout).removed == []
        assert repo.exists()
    finally:
        downloading.kill()
        downloading.wait()
    collected = collect_now(layout)
    assert [item.path for item in collected.removed] == ["hub/models--tiny--model"]
    assert not repo.exists()


def collect_now(layout: CacheLayout) -> Collected:
    ages = Ages(staging=60, outcomes=86400)
    now = time.time()
    plan = plan_collection(layout, use=NOBODY, ages=ages, now=now)
    return collect(layout, plan, use=NOBODY, ages=ages, now=now, identity=ME)


def test_removing_one_key_of_a_repository_keeps_what_another_key_needs(hub: HubServer, cache: Path) -> None:
    populate(hub, cache)
    populate(hub, cache, include=("*.json",))
    layout = CacheLayout(cache)
    removed = remove_model(layout, TINY, reason="test", identity=ME, use=NOBODY)
    assert removed.freed > 30000  # the weights went
    assert check_ready(layout, JSON_ONLY) is not None
    snapshot = next((cache / "hub" / "models--tiny--model" / "snapshots").iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(
        ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    )
    script = "from huggingface_hub import hf_hub_download as d; print(open(d('tiny/model', 'config.json')).read())"
    loaded = subprocess.run(
        [sys.executable, "-c", script],
        env={"HF_HUB_CACHE": str(cache / "hub"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr


def test_a_purge_round_told_to_stop_removes_nothing_more(hub: HubServer, cache: Path) -> None:
    """The agent stops a round between two removals when it loses its Lease or is told to stop."""
    from modelcache.cache.purge import PurgePolicy, Round, run_purge

    populate(hub, cache)
    age_use(cache, TINY, days=30)
    told_to_stop = Round(
        policy=PurgePolicy(unused_for=86400),
        ages=Ages(staging=86400, outcomes=86400),
        live_pods=dict,
        identity=ME,
        keep_going=lambda: False,
    )
    report = run_purge(CacheLayout(cache), told_to_stop)
    assert report.stopped is True
    [item] = report.items
    assert (item.removed, item.refused) == (False, "not removed: this purge round was stopped")
    assert report.leftovers == []
    assert check_ready(CacheLayout(cache), TINY) is not None
