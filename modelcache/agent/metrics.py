"""The cache agent's metrics: gauges made from the last scan of the cache, counters of fetch outcomes
and purge rounds, in a registry per agent (so tests stay isolated)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from modelcache.cache.inventory import CacheEntry
from modelcache.cache.outcomes import KINDS
from modelcache.contract.errors import FetchError

STATES = ("ready", "downloading", "interrupted", "corrupt")
# A download takes from seconds to hours; a hit, milliseconds to a second.
_DURATION_BUCKETS = (0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)


def _reasons() -> frozenset[str]:
    """Every FetchError reason: the only values the `reason` label takes (anything else is "Other")."""
    found, pending = set(), [FetchError]
    while pending:
        cls = pending.pop()
        found.add(cls.reason)
        pending.extend(cls.__subclasses__())
    return frozenset(found)


REASONS = _reasons()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cache as the last scan saw it."""

    at: float
    models: Sequence[CacheEntry]
    free_bytes: int
    total_bytes: int
    seconds: float  # how long the scan took
    root_open: bool  # every UID may write the volume root (modelcache.cache.permissions)


class CacheCollector:
    """Gauges from the last scan, made at scrape time (models that are gone leave no stale series)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        if snapshot is None:  # not the active replica, or no scan yet
            return
        by_state = GaugeMetricFamily("modelcache_cache_models", "Models in the cache, by state.", labels=["state"])
        for state in STATES:
            by_state.add_metric([state], sum(1 for m in snapshot.models if m.state == state))
        yield by_state
        yield GaugeMetricFamily(
            "modelcache_cache_bytes",
            "Bytes of the models with a ready marker (ready or corrupt).",
            value=sum(m.size for m in snapshot.models if m.state in ("ready", "corrupt")),
        )
        yield GaugeMetricFamily(
            "modelcache_cache_staging_bytes",
            "Bytes of unfinished downloads (in progress or interrupted).",
            value=sum(m.staging_bytes for m in snapshot.models),
        )
        yield GaugeMetricFamily(
            "modelcache_cache_free_bytes", "Free bytes on the cache volume.", value=snapshot.free_bytes
        )
        yield GaugeMetricFamily(
            "modelcache_cache_capacity_bytes", "Size of the cache volume in bytes.", value=snapshot.total_bytes
        )
        size = GaugeMetricFamily(
            "modelcache_cache_model_bytes", "Bytes of each ready model.", labels=["model_key", "source"]
        )
        used = GaugeMetricFamily(
            "modelcache_cache_model_last_used_timestamp_seconds",
            "When each ready model was last used by a pod (else published), in Unix time.",
            labels=["model_key", "source"],
        )
        for model in snapshot.models:
            if model.state == "ready":
                size.add_metric([model.key, model.source], model.size)
                used.add_metric([model.key, model.source], model.idle_since or 0.0)
        yield size
        yield used
        yield GaugeMetricFamily(
            "modelcache_cache_root_open",
            "1 if fetchers of every UID may write the volume root, 0 if only its owner may (they fail: exit 10).",
            value=1.0 if snapshot.root_open else 0.0,
        )
        yield GaugeMetricFamily(
            "modelcache_cache_scan_timestamp_seconds", "When the cache was last scanned (Unix time).", value=snapshot.at
        )
        yield GaugeMetricFamily(
            "modelcache_cache_scan_duration_seconds", "How long the last scan took.", value=snapshot.seconds
        )


@dataclass(frozen=True, slots=True)
class AgentMetrics:
    registry: CollectorRegistry
    cache: CacheCollector
    leader: Gauge
    fetches: Counter
    fetch_duration: Histogram
    downloaded_bytes: Counter
    resumed_bytes: Counter
    purge_rounds: Counter
    purged_models: Counter
    purged_bytes: Counter
    purge_kept: Counter
    purge_last_success: Gauge

    node: str = ""  # node-local: every series gets the label node=<name>

    # long: one declaration per metric, read best as one table
    @classmethod
    def create(cls, *, node: str = "") -> AgentMetrics:
        registry = CollectorRegistry()
        cache = CacheCollector()
        registry.register(cache)
        metrics = cls(
            node=node,
            registry=registry,
            cache=cache,
            leader=Gauge(
                "modelcache_agent_leader", "1 on the replica that holds the Lease and acts.", registry=registry
            ),
            fetches=Counter(
                "modelcache_fetches",
                "Fetcher runs on this cache by outcome (hit, waited, downloaded, failed) and failure reason.",
                ["outcome", "reason"],
                registry=registry,
            ),
            fetch_duration=Histogram(
                "modelcache_fetch_duration_seconds",
                "How long the fetcher init container took, by outcome.",
                ["outcome"],
                buckets=_DURATION_BUCKETS,
                registry=registry,
            ),
            downloaded_bytes=Counter(
                "modelcache_fetch_downloaded_bytes",
                "Bytes fetchers downloaded from sources (in the run that fetched them; resumed bytes not again).",
                registry=registry,
            ),
            resumed_bytes=Counter(
                "modelcache_fetch_resumed_bytes",
                "Bytes fetchers found staged by an interrupted attempt and resumed instead of downloading.",
                registry=registry,
            ),
            purge_rounds=Counter(
                "modelcache_purge_rounds",
                "Purge rounds by result (ok, failed, stopped).",
                ["result"],
                registry=registry,
            ),
            purged_models=Counter(
                "modelcache_purged_models",
                "Models removed by the purge, by why (unused past the TTL, or the free-space watermark).",
                ["reason"],
                registry=registry,
            ),
            purged_bytes=Counter(
                "modelcache_purged_bytes", "Bytes freed by the purge (models and leftovers).", registry=registry
            ),
            purge_kept=Counter(
                "modelcache_purge_kept_at_removal",
                "Models chosen for removal but kept by the last check under their lock (a pod started).",
                registry=registry,
            ),
            purge_last_success=Gauge(
                "modelcache_purge_last_success_timestamp_seconds",
                "When a purge round last completed (Unix time); 0 before the first.",
                registry=registry,
            ),
        )
        for kind in KINDS:  # every series exists from the start, so rates work from zero
            metrics.fetches.labels(kind, "")
            metrics.fetch_duration.labels(kind)
        for result in ("ok", "failed", "stopped"):
            metrics.purge_rounds.labels(result)
        for reason in ("unused", "watermark"):
            metrics.purged_models.labels(reason)
        return metrics

    def exposition(self) -> tuple[int, str, bytes]:
        source = _Labelled(self.registry, {"node": self.node}) if self.node else self.registry
        return 200, CONTENT_TYPE_LATEST, generate_latest(source)


class _Labelled:
    """A registry's metrics with labels added to every sample (a node's agent: node=<name>), so that a
    Prometheus scrape of every DaemonSet pod tells the nodes' caches apart, whatever its relabelling."""

    def __init__(self, registry: CollectorRegistry, labels: dict[str, str]) -> None:
        self.registry, self.labels = registry, labels

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = [sample._replace(labels={**sample.labels, **self.labels}) for sample in metric.samples]
            yield labelled
