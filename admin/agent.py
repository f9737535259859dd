"""The cache agent (`modelcache agent`): purges unused models on a schedule and exports the cache's metrics.

It runs in the namespace of the cache PVC it mounts, from the webhook image, as its own Deployment:
never inside the webhook's pods, which must not wait for a volume to be bound or an NFS server to
answer before they can admit pods. Every replica serves /healthz and /metrics; only the holder of the
Lease scans the cache, counts fetch outcomes and purges, so one replica acts at a time.

- Every ``scan_every``: claim the new fetch outcome records (counters and histograms), then list the
  models (gauges of models, bytes, free space, per-model size and last use).
- Every ``check_unused_cached_models_every``: one purge round (admin.purge.run_purge) with TTL
  ``purge_unused_cached_models_after``, the optional watermark ``purge_min_free``, and live pods
  asked through the API. The time of the last round is kept on the volume, so a restarted agent keeps
  the schedule instead of purging at each start.

The work runs on a thread while the main loop renews the Lease every few seconds; a round stops
between two removals when the Lease is lost or the agent is told to stop.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from admin.purge import PurgePolicy, format_duration, parse_size, run_purge
from controller import httpd
from controller.config import DNS_LABEL, DNS_SUBDOMAIN, parse_duration, read_env, read_name
from fetcher import contract
from fetcher.errors import FetchError
from fetcher.inventory import CachedModel, free_space, list_models
from fetcher.layout import CacheLayout, format_bytes, list_names, write_atomically
from fetcher.locking import Identity
from fetcher.outcomes import COUNTED_SUFFIX, KINDS, claim_outcome, read_outcomes

if TYPE_CHECKING:
    from controller.leader import LeaderElector  # the kubernetes client: imported only to run
from webhook.config import read_boolean, read_choice

log = logging.getLogger("modelcache.agent")
LEASE_DURATION = timedelta(seconds=15)
RENEW_EVERY = 5.0  # seconds; a third of the Lease
SCHEDULE_FILE = "purge-schedule.json"  # under .modelcache/: when the last purge round ran
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


class AgentSettingsError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid cache agent settings:\n  " + "\n  ".join(problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """Everything the agent can be told; each field is MODELCACHE_<FIELD NAME IN UPPER CASE>."""

    cache_root: str = ""  # the cache PVC's mount path (required)
    namespace: str = "modelcache-system"  # its own namespace: where its Lease lives
    identity: str = ""  # its name in the Lease (the pod name); the host name when empty
    lease_name: str = "modelcache-cache-agent"
    check_unused_cached_models_every: timedelta = timedelta(days=1)
    purge_unused_cached_models_after: timedelta = timedelta(weeks=1)
    purge_min_free: str = ""  # watermark: "50Gi", "10%"; "" for none
    purge_dry_run: bool = False  # log what a round would remove, remove nothing
    staging_after: timedelta = timedelta(days=1)  # dead download attempts older than this go
    outcomes_after: timedelta = timedelta(weeks=1)  # outcome records older than this go
    scan_every: timedelta = timedelta(minutes=1)  # metrics refresh
    pods_namespace: str = ""  # ask only this namespace for live pods ("" all: a cache shared by many)
    metrics_port: int = 8080
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AgentSettings:
        values, problems = read_env(cls, _READERS, environ, what="cache agent")
        settings = cls(**values)  # type: ignore[arg-type]  # each reader returns its field's type
        if not settings.cache_root:
            problems.append(f"{contract.CACHE_ROOT_ENV} is required: the mount path of the cache PVC")
        elif not Path(settings.cache_root).is_dir():
            problems.append(
                f"{contract.CACHE_ROOT_ENV}={settings.cache_root!r} is not a directory: mount the cache PVC there"
            )
        if settings.purge_min_free:
            try:
                parse_size(settings.purge_min_free, 100)
            except ValueError as err:
                problems.append(f"MODELCACHE_PURGE_MIN_FREE={settings.purge_min_free!r}: {err}")
        if problems:
            raise AgentSettingsError(problems)
        return settings if settings.identity else replace(settings, identity=os.uname().nodename)


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("expected a TCP port number from 1 to 65535")
    return int(value)


_READERS: dict[str, Callable[[str], object]] = {
    "cache_root": str,
    "namespace": read_name(DNS_LABEL, "a namespace name", limit=63),
    "identity": str,
    "lease_name": read_name(DNS_SUBDOMAIN, "a Lease name", limit=253),
    "check_unused_cached_models_every": parse_duration,
    "purge_unused_cached_models_after": parse_duration,
    "purge_min_free": str,
    "purge_dry_run": read_boolean,
    "staging_after": parse_duration,
    "outcomes_after": parse_duration,
    "scan_every": parse_duration,
    "pods_namespace": read_name(DNS_LABEL, "a namespace name", limit=63, empty=True),
    "metrics_port": _port,
    "log_format": read_choice("text", "json"),
    "log_level": read_choice("DEBUG", "INFO", "WARNING", "ERROR"),
}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cache as the last scan saw it."""

    at: float
    models: Sequence[CachedModel]
    free_bytes: int
    total_bytes: int
    seconds: float  # how long the scan took


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
    purge_rounds: Counter
    purged_models: Counter
    purged_bytes: Counter
    purge_kept: Counter
    purge_last_success: Gauge

    @classmethod
    def create(cls) -> AgentMetrics:
        registry = CollectorRegistry()
        cache = CacheCollector()
        registry.register(cache)
        metrics = cls(
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
                "modelcache_fetch_downloaded_bytes", "Bytes fetchers downloaded from sources.", registry=registry
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
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)


class Agent:
    """`step` is one turn of the main loop; `run` repeats it until told to stop."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        elector: LeaderElector,
        live_pods: Callable[[], Mapping[str, Sequence[str]]],
    ) -> None:
        self.settings, self.elector, self.live_pods = settings, elector, live_pods
        self.layout = CacheLayout(Path(settings.cache_root).absolute())
        self.metrics = AgentMetrics.create()
        self.identity = Identity.here(pod=settings.identity, namespace=settings.namespace, node="")
        self.alive_at = time.monotonic()
        self.leading = False
        self.stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._next_scan = 0.0  # monotonic

    def run(self) -> None:
        while not self.stop.is_set():
            self.step()
            self.stop.wait(RENEW_EVERY)
        if self._worker is not None:
            self._worker.join()
        self.elector.release()

    def step(self) -> None:
        self.alive_at = time.monotonic()
        self.leading = bool(self.elector.try_lead(datetime.now(UTC)))
        self.metrics.leader.set(int(self.leading))
        if not self.leading:
            self.metrics.cache.snapshot = None  # the active replica reports the cache
            return
        if self._worker is not None and self._worker.is_alive():
            return
        if time.monotonic() >= self._next_scan:
            self._next_scan = time.monotonic() + self.settings.scan_every.total_seconds()
            self._worker = threading.Thread(target=self.work, name="cache-work", daemon=True)
            self._worker.start()

    def keep_going(self) -> bool:
        return self.leading and not self.stop.is_set()

    def work(self) -> None:
        """One turn of the active replica's work: a purge round when due, then the metrics."""
        try:
            if self.purge_due(time.time()):
                self.purge_round()
            self.count_outcomes()
            self.scan()
        except Exception:  # a thread must not die silently; the next turn tries again
            log.exception("cache work failed")

    # --- the purge ----------------------------------------------------------------------------------
    def purge_due(self, now: float) -> bool:
        last = self._last_round()
        return last is None or now - last >= self.settings.check_unused_cached_models_every.total_seconds()

    def _last_round(self) -> float | None:
        try:
            return float(json.loads((self.layout.state / SCHEDULE_FILE).read_bytes())["last_round"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def purge_round(self) -> dict[str, Any] | None:
        """One round; the report, or None when it could not run (logged, and retried at the next turn)."""
        settings = self.settings
        if not self.layout.state.is_dir():
            log.debug("purge: no model was ever fetched to %s; nothing to do", self.layout.root)
            return None
        _, total = free_space(self.layout)
        policy = PurgePolicy(
            unused_for=settings.purge_unused_cached_models_after.total_seconds(),
            min_free_bytes=parse_size(settings.purge_min_free, total),
        )
        try:
            report = run_purge(
                self.layout,
                policy=policy,
                staging_after=settings.staging_after.total_seconds(),
                outcomes_after=settings.outcomes_after.total_seconds(),
                dry_run=settings.purge_dry_run,
                live_pods=self.live_pods,
                identity=self.identity,
                keep_going=self.keep_going,
            )
        except Exception as err:  # noqa: BLE001 (the API is down, live pods unknown: nothing may go; retry later)
            self.metrics.purge_rounds.labels("failed").inc()
            log.error("purge round failed, nothing removed: %s: %s", type(err).__name__, str(err)[:500])
            return None
        self._account(report)
        return report

    def _account(self, report: dict[str, Any]) -> None:
        stopped = report["stopped"]
        for item in report["models"]:
            if item["remove"] and not report["dry_run"]:
                why = "watermark" if item["reason"].startswith("free space") else "unused"
                self.metrics.purged_models.labels(why).inc()
            elif item.get("kept_at_removal"):
                self.metrics.purge_kept.inc()
        if not report["dry_run"]:
            self.metrics.purged_bytes.inc(report["freed_bytes"])
        self.metrics.purge_rounds.labels("stopped" if stopped else "ok").inc()
        verb = "would free" if report["dry_run"] else "freed"
        removed = sum(1 for item in report["models"] if item["remove"])
        log.info(
            "purge round %s: %d of %d model(s) %s, %d leftover(s); %s %s; next in %s",
            "stopped" if stopped else "done",
            removed,
            len(report["models"]),
            "to remove" if report["dry_run"] else "removed",
            len(report["leftovers"]),
            verb,
            format_bytes(report["freed_bytes"]),
            format_duration(self.settings.check_unused_cached_models_every.total_seconds()),
        )
        if not stopped:
            self._record_round()
            self.metrics.purge_last_success.set(time.time())

    def _record_round(self) -> None:
        data = {"last_round": time.time(), "by": self.settings.identity}
        write_atomically(self.layout.state / SCHEDULE_FILE, json.dumps(data).encode())

    # --- metrics ------------------------------------------------------------------------------------
    def count_outcomes(self) -> int:
        """Claim every new outcome record into the counters; keep only the newest counted one per model."""
        counted = 0
        for path, record in read_outcomes(self.layout, counted=False):
            if claim_outcome(path) is None:
                continue  # another agent on this volume counted it
            try:  # any pod that mounts the volume read-write can write a record: trust no field's type
                seconds, downloaded = max(0.0, float(record.seconds)), max(0, int(record.bytes_downloaded))
            except (TypeError, ValueError):
                log.warning("skipped the outcome record %s: a field is not a number", path.name)
                continue
            reason = "" if record.kind != "failed" else (record.reason if record.reason in REASONS else "Other")
            self.metrics.fetches.labels(record.kind, reason).inc()
            self.metrics.fetch_duration.labels(record.kind).observe(seconds)
            self.metrics.downloaded_bytes.inc(downloaded)
            counted += 1
        newest: dict[str, Path] = {}
        for name in sorted(list_names(self.layout.outcomes)):
            if not name.endswith(COUNTED_SUFFIX) or name.startswith("."):
                continue
            key = name.removesuffix(COUNTED_SUFFIX).split("-", 2)[-1]
            if key in newest:
                newest[key].unlink(missing_ok=True)
            newest[key] = self.layout.outcomes / name
        return counted

    def scan(self) -> Snapshot:
        started = time.monotonic()
        models = list_models(self.layout)
        free, total = free_space(self.layout)
        snapshot = Snapshot(time.time(), models, free, total, time.monotonic() - started)
        self.metrics.cache.snapshot = snapshot
        return snapshot


def main(settings: AgentSettings) -> int:
    """`modelcache agent`: run until SIGTERM."""
    from admin.cluster import live_pods_by_key
    from controller.kube import connect
    from controller.leader import LeaderElector

    api = connect()
    elector = LeaderElector(
        api,
        namespace=settings.namespace,
        name=settings.lease_name,
        identity=settings.identity,
        duration=LEASE_DURATION,
    )
    agent = Agent(settings, elector=elector, live_pods=lambda: live_pods_by_key(api, settings.pods_namespace))

    def on_term(signum: int, _: FrameType | None) -> None:
        log.info("signal %d: finishing the current removal, releasing the Lease", signum)
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def health() -> tuple[int, str, bytes]:
        healthy = time.monotonic() - agent.alive_at < 60
        return (200, httpd.TEXT, b"ok\n") if healthy else (503, httpd.TEXT, b"stuck\n")

    httpd.serve(settings.metrics_port, {"/healthz": health, "/metrics": agent.metrics.exposition})
    log.info(
        "modelcache cache agent %s on %s: purge every %s, unused after %s%s%s; pods %s; metrics on :%d",
        settings.identity,
        settings.cache_root,
        format_duration(settings.check_unused_cached_models_every.total_seconds()),
        format_duration(settings.purge_unused_cached_models_after.total_seconds()),
        f", keep {settings.purge_min_free} free" if settings.purge_min_free else "",
        " (dry run)" if settings.purge_dry_run else "",
        f"in namespace {settings.pods_namespace}" if settings.pods_namespace else "in all namespaces",
        settings.metrics_port,
    )
    agent.run()
    return 0
