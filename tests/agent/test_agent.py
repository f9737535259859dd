"""The cache agent as it runs in the cluster: its own process on a cache the real fetcher populated,
the API stand-in enforcing the RBAC that manifests/ grants it, /metrics scraped and parsed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.fetcher_env import fetcher_environment, run_fetcher
from devtools.hubserver import HubServer
from devtools.kubeapi import KubeApi, grants_of
from devtools.webhook_process import free_port
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.cache.outcomes import COUNTED_SUFFIX, OutcomeRecord, read_outcomes, write_outcome
from modelcache.contract import cachedmodel, keys, sources, wire
from tests.helpers import age_use, modelcache, populate, start_model_pod, write_kubeconfig
from tests.manifests.rendering import CHART_CUSTOM, render, render_chart

NS = "modelcache-system"
TINY = keys.model_key(sources.parse_source("hf://tiny/model"))
BIG = keys.model_key(sources.parse_source("hf://tiny/big"))
JSON_ONLY = keys.model_key(sources.parse_source("hf://tiny/model"), ("*.json",))
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Agent:
    """`modelcache agent` in its own process, as the Deployment runs it."""

    def __init__(
        self,
        cache: Path,
        kubeconfig: Path,
        identity: str,
        tmp_path: Path,
        *,
        prefix: tuple[str, ...] = (),
        **settings: str,
    ) -> None:
        self.port = free_port()
        self.log = tmp_path / f"{identity}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCACHE_")}
        env |= {
            "KUBECONFIG": str(kubeconfig),
            "MODELCACHE_CACHE_ROOT": str(cache),
            "MODELCACHE_NAMESPACE": NS,
            "MODELCACHE_IDENTITY": identity,
            "MODELCACHE_METRICS_PORT": str(self.port),
            "MODELCACHE_SCAN_EVERY": "1s",
            "MODELCACHE_LOG_FORMAT": "json",
            **settings,
        }
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*prefix, sys.executable, "-m", "modelcache", "agent"], env=env, stdout=out, stderr=out
            )

    def scrape(self) -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def wait_for(self, what: str, check: Callable[[Samples], bool], seconds: float = 30) -> Samples:
        deadline = time.monotonic() + seconds
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                samples = self.scrape()
                if check(samples):
                    return samples
            except OSError:
                pass  # not listening yet
            assert time.monotonic() < deadline, f"{what}: not within {seconds} s\n{self.log.read_text()}"
            time.sleep(0.2)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@contextlib.contextmanager
def granted(tmp_path: Path, overlay: str, account: str) -> Iterator[tuple[KubeApi, Path]]:
    """The stand-in, enforcing what `overlay` grants `account`, and a kubeconfig with its token."""
    grants = grants_of(render(overlay), service_account=account, namespace=NS)
    with KubeApi(token="agent", grants={"agent": grants}) as api:
        yield api, write_kubeconfig(tmp_path / "kubeconfig", api.url, "agent")
        assert api.forbidden == []


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[KubeApi, Path]]:
    """What the nfs overlay grants the cache agent."""
    with granted(tmp_path, "overlays/nfs", "modelcache-cache-agent") as found:
        yield found


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait()


def test_the_agent_purges_only_what_no_live_pod_uses_and_exports_the_cache(
    hub: HubServer, cache: Path, tmp_path: Path, kube: tuple[KubeApi, Path], agents: list[Agent]
) -> None:
    api, kubeconfig = kube
    populate(hub, cache)
    populate(hub, cache, include=("*.json",))
    for key in (TINY, JSON_ONLY):
        age_use(cache, key, days=8)
    start_model_pod(api, TINY)  # serving/llm-0 uses TINY; nobody uses JSON_ONLY
    # What a fetcher that resumed an interrupted download records (tests/fetcher/test_concurrency.py).
    write_outcome(
        CacheLayout(cache),
        OutcomeRecord(
            kind="downloaded",
            key=BIG,
            source="hf://tiny/big@main",
            at=time.time(),
            bytes_downloaded=300,
            bytes_resumed=700,
            seconds=1.0,
        ),
    )
    records = [record for _, record in read_outcomes(CacheLayout(cache))]
    assert len(records) == 3

    agent = Agent(cache, kubeconfig, "agent-0", tmp_path)
    agents.append(agent)
    samples = agent.wait_for("a purge round", lambda s: value(s, "modelcache_purge_rounds_total", result="ok") == 1)
    samples = agent.wait_for("a scan after it", lambda s: value(s, "modelcache_cache_models", state="ready") == 1)

    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/healthz", timeout=5) as health:
        assert (health.status, health.read()) == (200, b"ok\n")  # the liveness probe
    layout = CacheLayout(cache)
    assert check_ready(layout, TINY) is not None  # in use by a live pod, though unused for 8 days
    assert check_ready(layout, JSON_ONLY) is None
    assert value(samples, "modelcache_purged_models_total", reason="unused") == 1
    assert value(samples, "modelcache_agent_leader") == 1
    assert value(samples, "modelcache_cache_models", state="interrupted") == 0
    model_bytes = value(samples, "modelcache_cache_model_bytes", model_key=TINY, source="hf://tiny/model@main")
    assert model_bytes == value(samples, "modelcache_cache_bytes") > 0
    assert value(samples, "modelcache_cache_free_bytes") > 0
    for kind in ("hit", "waited", "downloaded"):
        counted = value(samples, "modelcache_fetches_total", outcome=kind, reason="")
        assert counted == sum(1 for r in records if r.kind == kind), kind
    assert value(samples, "modelcache_fetch_downloaded_bytes_total") == sum(r.bytes_downloaded for r in records)
    assert ("modelcache_fetch_resumed_bytes_total", ()) in samples
    assert value(samples, "modelcache_fetch_resumed_bytes_total") == 700  # counted apart, never as downloaded
    assert value(samples, "modelcache_fetch_duration_seconds_count", outcome="downloaded") == sum(
        1 for r in records if r.kind == "downloaded"
    )
    lease = api.get("Lease", "modelcache-cache-agent", NS)
    assert lease is not None
    assert lease["spec"]["holderIdentity"].startswith("agent-0_")
    # `kubectl get cachedmodels`: the scan made the object of the model the pod uses, Ready here, and
    # the purged one has none.
    deadline = time.monotonic() + 30  # the objects follow the metrics, in the same scan
    while not (model := api.get("CachedModel", cachedmodel.name_for_key(TINY)) or {}).get("status"):
        assert time.monotonic() < deadline, agent.log.read_text()
        time.sleep(0.1)
    assert (model["status"]["phase"], model["status"]["pods"]) == ("Ready", 1)
    assert model["status"]["caches"][0]["volume"] == f"{NS}/modelcache"
    assert api.get("CachedModel", cachedmodel.name_for_key(JSON_ONLY)) is None
    log = agent.log.read_text()
    assert f'"model_key": "{JSON_ONLY}"' in log  # the removal's line names its model
    assert "unused for 1w" in log

    # A pod's fetcher finds TINY: the agent counts the hit, and keeps only the newest record per model.
    hit = run_fetcher(fetcher_environment("hf://tiny/model", cache, pod="llm-1", extra={"HF_ENDPOINT": hub.url}))
    assert hit.returncode == 0, hit.stderr
    agent.wait_for("the hit counted", lambda s: value(s, "modelcache_fetches_total", outcome="hit", reason="") == 1)
    names = sorted(os.listdir(layout.outcomes))
    assert [n for n in names if TINY in n and n.endswith(COUNTED_SUFFIX)] == [n for n in names if TINY in n][-1:]
    listed = modelcache(cache, "ls", "--json")
    assert '"kind": "hit"' in listed.stdout  # `modelcache ls` still shows the last outcome

    # A second replica waits; when the first stops, it takes the Lease over and keeps the schedule.
    standby = Agent(cache, kubeconfig, "agent-1", tmp_path)
    agents.append(standby)
    samples = standby.wait_for("the standby up", lambda s: ("modelcache_agent_leader", ()) in s)
    assert value(samples, "modelcache_agent_leader") == 0
    assert ("modelcache_cache_models", (("state", "ready"),)) not in samples  # only the active one reports
    assert agent.stop() == 0
    released = api.get("Lease", "modelcache-cache-agent", NS)
    assert released is not None
    assert released["spec"].get("holderIdentity") is None or released["spec"]["holderIdentity"].startswith("agent-1_")
    samples = standby.wait_for("the takeover", lambda s: value(s, "modelcache_cache_models", state="ready") == 1)
    assert value(samples, "modelcache_agent_leader") == 1
    assert value(samples, "modelcache_purge_rounds_total", result="ok") == 0  # the last round was just now


def test_an_eviction_below_the_watermark_is_counted_by_its_cause(
    hub: HubServer, cache: Path, tmp_path: Path, kube: tuple[KubeApi, Path], agents: list[Agent]
) -> None:
    _, kubeconfig = kube
    populate(hub, cache)  # used just now: well within the TTL
    agent = Agent(cache, kubeconfig, "agent-0", tmp_path, MODELCACHE_PURGE_MIN_FREE="100%")  # never enough free
    agents.append(agent)
    samples = agent.wait_for(
        "a watermark eviction", lambda s: value(s, "modelcache_purged_models_total", reason="watermark") == 1
    )
    assert value(samples, "modelcache_purged_models_total", reason="unused") == 0
    assert check_ready(CacheLayout(cache), TINY) is None


def test_without_the_pod_list_a_purge_round_removes_nothing(
    hub: HubServer, cache: Path, tmp_path: Path, agents: list[Agent]
) -> None:
    rules = grants_of(render("overlays/nfs"), service_account="modelcache-cache-agent", namespace=NS)
    leases_only = [(scope, rule) for scope, rule in rules if "pods" not in rule["resources"]]
    populate(hub, cache)
    age_use(cache, TINY, days=30)
    outcomes = CacheLayout(cache).outcomes  # records any pod with the volume mounted read-write could write
    (outcomes / f"{time.time_ns()}-1-{TINY}.json").write_text(
        json.dumps({"kind": "failed", "key": TINY, "source": "x", "at": 0, "reason": "Made-Up-" + "x" * 500})
    )
    (outcomes / f"{time.time_ns()}-2-{TINY}.json").write_text(
        json.dumps({"kind": "hit", "key": TINY, "source": "x", "at": 0, "seconds": "soon"})
    )
    with KubeApi(token="agent", grants={"agent": leases_only}) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, "agent")
        agent = Agent(cache, kubeconfig, "agent-0", tmp_path)
        agents.append(agent)
        agent.wait_for("a failed round", lambda s: value(s, "modelcache_purge_rounds_total", result="failed") >= 1)
        samples = agent.wait_for("a scan", lambda s: value(s, "modelcache_cache_models", state="ready") == 1)
        assert agent.stop() == 0
    assert check_ready(CacheLayout(cache), TINY) is not None
    log = agent.log.read_text()
    assert "purge round failed, nothing removed" in log
    assert "403" in log
    # The metrics survive hostile records: an unknown reason is "Other", a record that is not numbers is skipped.
    assert value(samples, "modelcache_fetches_total", outcome="failed", reason="Other") == 1
    assert value(samples, "modelcache_fetches_total", outcome="hit", reason="") == 0
    assert "skipped the outcome record" in log


def test_the_agent_opens_a_volume_root_it_owns_to_fetchers_of_every_uid(
    cache: Path, tmp_path: Path, kube: tuple[KubeApi, Path], agents: list[Agent]
) -> None:
    _, kubeconfig = kube
    cache.chmod(0o755)  # as a provisioner makes it, for the agent's UID
    agent = Agent(cache, kubeconfig, "agent-0", tmp_path)
    agents.append(agent)
    samples = agent.wait_for("a scan", lambda s: ("modelcache_cache_root_open", ()) in s)
    assert value(samples, "modelcache_cache_root_open") == 1
    assert cache.stat().st_mode & 0o777 == 0o777
    assert "is now mode 0777: fetchers of any UID can write it" in agent.log.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the volume root another owner")
def test_a_volume_root_the_agent_may_not_open_is_reported_and_the_agent_runs_on(
    cache: Path, tmp_path: Path, kube: tuple[KubeApi, Path], agents: list[Agent]
) -> None:
    _, kubeconfig = kube
    os.chown(cache, 12345, 12345)
    cache.chmod(0o755)
    unprivileged = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown")  # judged as a plain UID
    agent = Agent(cache, kubeconfig, "agent-0", tmp_path, prefix=unprivileged)
    agents.append(agent)
    samples = agent.wait_for("a scan", lambda s: ("modelcache_cache_root_open", ()) in s)
    assert value(samples, "modelcache_cache_root_open") == 0
    assert cache.stat().st_mode & 0o777 == 0o755
    log = agent.log.read_text()
    assert f"the cache volume root {cache} (owner 12345:12345, mode 0755) is not writable for every UID" in log
    assert "fail with CacheNotWritable (exit 10)" in log
    assert agent.stop() == 0


def test_bad_agent_settings_stop_it_with_every_problem_named(cache: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCACHE_")}
    env |= {
        "MODELCACHE_CACHE_ROOT": str(cache / "missing"),
        "MODELCACHE_PURGE_UNUSED_CACHED_MODELS_AFTER": "7 days",
        "MODELCACHE_PURGE_MIN_FREE": "lots",
        "MODELCACHE_PURGE_UNUSED_AFTER": "1w",
    }
    result = subprocess.run(
        [sys.executable, "-m", "modelcache", "agent"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert f"MODELCACHE_CACHE_ROOT={str(cache / 'missing')!r} is not a directory" in result.stderr
    assert "MODELCACHE_PURGE_UNUSED_CACHED_MODELS_AFTER='7 days': expected a duration" in result.stderr
    assert "MODELCACHE_PURGE_MIN_FREE='lots': expected a Kubernetes quantity such as" in result.stderr
    assert "MODELCACHE_PURGE_UNUSED_AFTER is not a cache agent setting" in result.stderr


def test_the_cronjob_purge_in_provision_mode_asks_only_its_namespace(
    hub: HubServer, cache: Path, tmp_path: Path
) -> None:
    """A cache per namespace (provision mode): a pod elsewhere does not keep this cache's models."""
    objects = render_chart({**CHART_CUSTOM, "cacheAgent": {"kind": "cronjob", "namespaces": ["serving"]}})
    grants = grants_of(objects, service_account="modelcache-cache-agent", namespace="serving")
    cron: dict[str, Any] = next(o for o in objects if o["kind"] == "CronJob")
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    populate(hub, cache)
    populate(hub, cache, include=("*.json",))
    for key in (TINY, JSON_ONLY):
        age_use(cache, key, days=30)
    with KubeApi(token="purge", grants={"purge": grants}) as api:
        start_model_pod(api, TINY)  # serving/llm-0
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "other", "namespace": "team-b", "labels": {wire.MODEL_KEY_LABEL: JSON_ONLY}},
                "spec": {"containers": [{"name": "app", "image": "vllm/vllm-openai:v0.6.0"}]},
            }
        )
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, "purge")
        result = modelcache(cache, *command[1:], env={"KUBECONFIG": str(kubeconfig)})
        assert api.forbidden == []
    assert result.returncode == 0, result.stderr
    layout = CacheLayout(cache)
    assert check_ready(layout, TINY) is not None
    assert check_ready(layout, JSON_ONLY) is None  # team-b's pod reads team-b's own cache


def test_purge_rounds_follow_their_own_schedule_not_the_metrics_scan(
    hub: HubServer, cache: Path, tmp_path: Path, kube: tuple[KubeApi, Path], agents: list[Agent]
) -> None:
    """checkUnusedCachedModelsEvery shorter than the scan: each round still comes when the setting says."""
    _, kubeconfig = kube
    populate(hub, cache)
    every = "2s"
    agent = Agent(
        cache,
        kubeconfig,
        "agent-0",
        tmp_path,
        MODELCACHE_SCAN_EVERY="1m",
        MODELCACHE_CHECK_UNUSED_CACHED_MODELS_EVERY=every,
    )
    agents.append(agent)
    agent.wait_for("3 rounds", lambda s: value(s, "modelcache_purge_rounds_total", result="ok") >= 3, seconds=40)
    rounds = [json.loads(line) for line in agent.log.read_text().splitlines() if "purge round" in line]
    assert all(f"next in {every} (at " in entry["message"] for entry in rounds)


def test_a_model_someone_declared_is_kept_warm_through_every_purge(
    hub: HubServer, cache: Path, tmp_path: Path, kube: tuple[KubeApi, Path], agents: list[Agent]
) -> None:
    api, kubeconfig = kube
    populate(hub, cache)
    populate(hub, cache, include=("*.json",))
    for key in (TINY, JSON_ONLY):
        age_use(cache, key, days=8)  # both unused for longer than the 1w TTL, no live pod
    api.create(
        {
            "apiVersion": cachedmodel.API_VERSION,
            "kind": "CachedModel",
            "metadata": {"name": "tiny-json"},
            "spec": {"source": "hf://tiny/model", "include": ["*.json"], "namespaces": ["serving"]},
        }
    )
    agent = Agent(cache, kubeconfig, "agent-0", tmp_path, MODELCACHE_VOLUME_MODE="clone")  # as the nfs overlay
    agents.append(agent)
    agent.wait_for("a purge round", lambda s: value(s, "modelcache_purge_rounds_total", result="ok") == 1)
    layout = CacheLayout(cache)
    assert check_ready(layout, JSON_ONLY) is not None  # declared: kept, however long unused
    assert check_ready(layout, TINY) is None  # nobody declared it, no pod uses it: purged
    deadline = time.monotonic() + 30
    while not (declared := api.get("CachedModel", "tiny-json") or {}).get("status"):
        assert time.monotonic() < deadline, agent.log.read_text()
        time.sleep(0.1)
    assert (declared["status"]["phase"], declared["status"]["pods"]) == ("Ready", 0)  # a declaration is no pod
