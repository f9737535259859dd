"""Node-local caches on real processes and real files: one cache directory per node, as each node's
hostPath gives its pods; real fetcher processes started at once, the Hub stand-in counting what it sends;
the warm container's `modelcache warm` as the DaemonSet runs it, SIGTERM included."""

from __future__ import annotations

import json
import os
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
from modelcache.cache.outcomes import read_outcomes
from modelcache.contract import keys, sources
from modelcache.contract.warmup import WarmModel, dump_list

SOURCE = "hf://tiny/big"
KEY = keys.model_key(sources.parse_source(SOURCE))
NODES = 3
PODS_PER_NODE = 2


def model_bytes(hub: HubServer) -> int:
    repo = hub.repos["tiny/big"]
    return sum(item.size for item in repo.commits[repo.main].values())


def test_pods_spread_over_nodes_cost_the_origin_one_copy_per_node_however_many_start_at_once(
    hub: HubServer, tmp_path: Path
) -> None:
    hub.faults.bytes_per_second = 2 << 20  # ~2 s a copy: the pods of a node overlap, so they must share
    settings = {"HF_ENDPOINT": hub.url, "MODELCACHE_LOCK_POLL": "50ms", "MODELCACHE_HEARTBEAT": "200ms"}
    nodes = [tmp_path / f"node-{n}" / "cache" for n in range(NODES)]
    processes = []
    for node, cache in enumerate(nodes):
        cache.mkdir(parents=True)
        for pod in range(PODS_PER_NODE):
            env = fetcher_environment(SOURCE, cache, pod=f"llm-{node}-{pod}", extra=settings)
            env["MODELCACHE_NODE_NAME"] = f"node-{node}"
            processes.append(start_fetcher(env, log=tmp_path / f"llm-{node}-{pod}.log"))
    codes = [p.wait(timeout=120) for p in processes]
    assert codes == [0] * len(processes), [log.read_text() for log in tmp_path.glob("*.log")]
    assert hub.bytes_served == NODES * model_bytes(hub)  # M copies for M nodes, not one per pod
    for cache in nodes:
        layout = CacheLayout(cache)
        assert check_ready(layout, KEY) is not None
        kinds = sorted(record.kind for _, record in read_outcomes(layout, counted=False))
        assert kinds.count("downloaded") == 1, kinds  # one download per node; its other pod waited or hit


def warm(cache: Path, list_file: Path, hub: HubServer, *args: str, log: Path | None = None) -> subprocess.Popen[str]:
    """`modelcache warm` as the warm container runs it; its stderr piped, or into `log`."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "KUBECONFIG": "/nonexistent", "MODELCACHE_RETRY_BASE": "10ms"}
    command = [sys.executable, "-m", "modelcache", "--cache", str(cache), "warm", "--list", str(list_file), *args]
    if log is None:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with log.open("w") as stderr:  # the child has its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def test_a_warmed_node_serves_its_first_pod_from_its_own_disk(hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    list_file = tmp_path / "warm.json"
    models = [WarmModel(SOURCE), WarmModel("hf://tiny/model", ("*.json",))]
    list_file.write_text(dump_list(models, node="gpu-1"))
    process = warm(cache, list_file, hub, "--once")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "0 model(s) not ready" in out
    assert hub.bytes_served == model_bytes(hub) + sum(
        item.size for path, item in hub.repos["tiny/model"].commits[hub.repos["tiny/model"].main].items()
        if path.endswith(".json")
    )  # fmt: skip
    hub.reset_counters()
    first_pod = run_fetcher(fetcher_environment(SOURCE, cache, pod="llm-0", extra={"HF_ENDPOINT": hub.url}))
    assert first_pod.returncode == 0, first_pod.stderr
    assert hub.bytes_served == 0  # nothing from the origin: the node had it
    hits = [r for _, r in read_outcomes(CacheLayout(cache), counted=False) if r.kind == "hit"]
    assert len(hits) == 1


def test_warm_up_says_which_model_failed_and_goes_on_with_the_others(hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    list_file = tmp_path / "warm.json"
    list_file.write_text(dump_list([WarmModel("hf://tiny/missing"), WarmModel(SOURCE)], node="gpu-1"))
    process = warm(cache, list_file, hub, "--once")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "1 model(s) not ready: hf://tiny/missing" in out
    assert "warm-up of hf://tiny/missing@main failed (next try in 30 s)" in err
    assert check_ready(CacheLayout(cache), KEY) is not None  # the good one is there all the same


def test_warm_up_waits_for_the_agents_list_then_follows_it(hub: HubServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    list_file, log = tmp_path / "warm.json", tmp_path / "warm.log"
    process = warm(cache, list_file, hub, "--every", "1s", log=log)
    try:
        deadline = time.monotonic() + 60
        while "no warm-up list at" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "nothing said about the missing list"
            time.sleep(0.05)
        time.sleep(2.5)  # two more looks at --every 1s, which must not say it again
        list_file.write_text(dump_list([WarmModel(SOURCE)], node="gpu-1"))  # the agent's first scan
        deadline = time.monotonic() + 60
        while check_ready(CacheLayout(cache), KEY) is None:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the listed model was not fetched"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0  # idle at SIGTERM: a clean stop
    assert log.read_text().count("no warm-up list at") == 1  # said once, not at every look


def test_sigterm_during_a_warm_up_download_leaves_nothing_ready_and_the_next_start_resumes(
    hub: HubServer, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    list_file = tmp_path / "warm.json"
    list_file.write_text(dump_list([WarmModel(SOURCE)], node="gpu-1"))
    hub.faults.bytes_per_second = 1 << 20
    process = warm(cache, list_file, hub)
    deadline = time.monotonic() + 60
    while hub.bytes_served < 1 << 20:
        assert time.monotonic() < deadline, "the download did not start"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM  # at once, not after the download
    assert check_ready(CacheLayout(cache), KEY) is None  # never a partial model marked ready
    sent = hub.bytes_served
    hub.faults.bytes_per_second = None
    hub.reset_counters()
    again = warm(cache, list_file, hub, "--once")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert check_ready(CacheLayout(cache), KEY) is not None
    assert hub.bytes_served <= model_bytes(hub) - sent + (1 << 20)  # resumed, not fetched again from zero


def test_the_warm_up_list_file_round_trips_and_a_broken_one_is_refused_by_name(tmp_path: Path) -> None:
    from modelcache.contract.warmup import load_list, parse_warm_up

    models = (WarmModel(SOURCE + "@main"), WarmModel("s3://bucket/llm", ("*.safetensors",)))
    assert load_list(dump_list(models, node="n")) == models  # sources as the annotation parser writes them
    with pytest.raises(ValueError, match="entry 2 is not an object with a source"):
        parse_warm_up(json.dumps([{"source": SOURCE}, {"uri": SOURCE}]))
    with pytest.raises(ValueError, match="entry 1: model 'ftp://x': the scheme 'ftp' is not supported"):
        parse_warm_up('[{"source": "ftp://x"}]')
    gpu = parse_warm_up('[{"source": "hf://org/m", "nodeSelector": {"gpu": "true"}}]')[0]
    assert gpu.matches({"gpu": "true", "zone": "a"})
    assert not gpu.matches({"zone": "a"})
