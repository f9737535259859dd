"""The cache agent (`modelcache agent`): purges unused models on a schedule and exports the cache's metrics.

It runs in the namespace of the cache PVC it mounts, from the webhook image, as its own Deployment:
never inside the webhook's pods, which must not wait for a volume to be bound or an NFS server to
answer before they can admit pods. Every replica serves /healthz and /metrics; only the holder of the
Lease scans the cache, counts fetch outcomes and purges, so one replica acts at a time.

- Every ``scan_every``: claim the new fetch outcome records (counters and histograms), then list the
  models (gauges of models, bytes, free space, per-model size and last use).
- Every ``check_unused_cached_models_every``: one purge round (modelcache.cache.purge.run_purge) with TTL
  ``purge_unused_cached_models_after``, the optional watermark ``purge_min_free``, and live pods
  asked through the API. The time of the last round is kept on the volume, so a restarted agent keeps
  the schedule instead of purging at each start.

The work runs on a thread while the main loop renews the Lease every few seconds; a round stops
between two removals when the Lease is lost or the agent is told to stop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from modelcache.agent.config import AgentSettings
from modelcache.agent.metrics import REASONS, AgentMetrics, Snapshot
from modelcache.cache.collection import Ages
from modelcache.cache.files import list_names, write_atomically
from modelcache.cache.inventory import CacheEntry, failed_before_any_file, free_space, list_models
from modelcache.cache.layout import CacheLayout
from modelcache.cache.outcomes import COUNTED_SUFFIX, claim_outcome, read_outcomes
from modelcache.cache.owners import Identity
from modelcache.cache.permissions import open_to_all
from modelcache.cache.purge import PurgePolicy, PurgeReport, Round, read_watermark, run_purge
from modelcache.contract.pods import PodRef
from modelcache.contract.quantities import format_bytes, format_duration
from modelcache.contract.warmup import WarmModel

if TYPE_CHECKING:
    from modelcache.agent.cachedmodels import CachedModels
    from modelcache.runtime.leader import LeaderElector  # the kubernetes client: imported only to run

log = logging.getLogger("modelcache.agent")
TURN = 1.0  # seconds between two looks at what is due (a scan, a purge round)
RETRY_FAILED_ROUND = 60.0  # seconds before a round that could not ask the API is tried again
SCHEDULE_FILE = "purge-schedule.json"  # under .modelcache/: when the last purge round ran


class Agent:
    """`step` is one turn of the main loop; `run` repeats it until told to stop."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        elector: LeaderElector | None,
        live_pods: Callable[[], Mapping[str, Sequence[PodRef]]],
        kept: Callable[[], Mapping[str, Sequence[PodRef]]] | None = None,
        cached_models: CachedModels | None = None,
        warm_up: Callable[[], Sequence[WarmModel]] | None = None,
    ) -> None:
        """`elector` None: this agent is the only one of its cache (a node's own), so it always acts.
        `kept`: what the purge keeps besides live pods (declared CachedModels, the warm-up list), as
        pseudo-users. `warm_up`: the models this node keeps, written to settings.warm_up_file at every scan."""
        self.settings, self.elector, self.live_pods, self.kept = settings, elector, live_pods, kept
        self.cached_models, self.warm_up = cached_models, warm_up
        self.layout = CacheLayout(Path(settings.cache_root).absolute())
        self.metrics = AgentMetrics.create(node=settings.node_name)
        self.identity = Identity.here(pod=settings.identity, namespace=settings.namespace, node=settings.node_name)
        self.alive_at = time.monotonic()
        self.leading = False
        self.stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._next_scan = 0.0  # monotonic
        self._retry_round_at = 0.0  # monotonic: after a round that could not run

    def run(self) -> None:
        """Until told to stop: the Lease is renewed on its own thread; the work runs when due."""
        from modelcache.runtime.leader import LeaderLoop

        lease = LeaderLoop(self.elector).start() if self.elector is not None else None
        while not self.stop.is_set():
            self.step()
            self.stop.wait(TURN)
        if self._worker is not None:
            self._worker.join()
        if lease is not None:
            lease.stop()

    def step(self) -> None:
        """One look: lead or stand by; start the work when a scan or a purge round is due."""
        self.alive_at = time.monotonic()
        self.leading = self.elector is None or self.elector.is_leader
        self.metrics.leader.set(int(self.leading))
        if not self.leading:
            self.metrics.cache.snapshot = None  # the active replica reports the cache
            return
        if self._worker is not None and self._worker.is_alive():
            return
        if time.monotonic() >= self._next_scan or self.purge_due(time.time()):
            self._worker = threading.Thread(target=self.work, name="cache-work", daemon=True)
            self._worker.start()

    def keep_going(self) -> bool:
        return (self.elector is None or self.elector.is_leader) and not self.stop.is_set()

    def work(self) -> None:
        """One turn of the active replica's work: a purge round when due, then the metrics."""
        try:
            if self.purge_due(time.time()) and self.purge_round() is None:
                self._retry_round_at = time.monotonic() + RETRY_FAILED_ROUND
            self.count_outcomes()
            self.scan()
        except Exception:  # a thread must not die silently; the next turn tries again
            log.exception("cache work failed")
        self._next_scan = time.monotonic() + self.settings.scan_every.total_seconds()

    # --- the purge ----------------------------------------------------------------------------------
    def purge_due(self, now: float) -> bool:
        """Due every check_unused_cached_models_every (the last round's time is kept on the volume)."""
        if time.monotonic() < self._retry_round_at or not self.layout.state.is_dir():
            return False
        last = self._last_round()
        return last is None or now - last >= self.settings.check_unused_cached_models_every.total_seconds()

    def _last_round(self) -> float | None:
        try:
            return float(json.loads((self.layout.state / SCHEDULE_FILE).read_bytes())["last_round"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def purge_round(self) -> PurgeReport | None:
        """One round; the report, or None when it could not run (logged, and retried at the next turn)."""
        settings = self.settings
        if not self.layout.state.is_dir():
            log.debug("purge: no model was ever fetched to %s; nothing to do", self.layout.root)
            return None
        _, total = free_space(self.layout)
        round_ = Round(
            policy=PurgePolicy(
                unused_for=settings.purge_unused_cached_models_after.total_seconds(),
                min_free_bytes=read_watermark(settings.purge_min_free, capacity=total),
            ),
            ages=Ages(staging=settings.staging_after.total_seconds(), outcomes=settings.outcomes_after.total_seconds()),
            live_pods=self.users,
            identity=self.identity,
            dry_run=settings.purge_dry_run,
            keep_going=self.keep_going,
        )
        try:
            report = run_purge(self.layout, round_)
        except Exception as err:  # noqa: BLE001 (the API is down, live pods unknown: nothing may go; retry later)
            self.metrics.purge_rounds.labels("failed").inc()
            log.error("purge round failed, nothing removed: %s: %s", type(err).__name__, str(err)[:500])
            return None
        self._account(report)
        return report

    def users(self) -> dict[str, list[PodRef]]:
        """Who keeps each model from the purge: its live pods, and what `kept` says."""
        found = {key: list(refs) for key, refs in self.live_pods().items()}
        for key, refs in (self.kept() if self.kept is not None else {}).items():
            found.setdefault(key, []).extend(refs)
        return found

    def _account(self, report: PurgeReport) -> None:
        for item in report.items:
            if item.removed:
                self.metrics.purged_models.labels(item.decision.cause.value).inc()
            elif item.kept_at_removal:
                self.metrics.purge_kept.inc()
        if not report.dry_run:
            self.metrics.purged_bytes.inc(report.freed_bytes)
        self.metrics.purge_rounds.labels("stopped" if report.stopped else "ok").inc()
        chosen = sum(1 for item in report.items if item.decision.remove and (report.dry_run or item.removed))
        every = self.settings.check_unused_cached_models_every.total_seconds()  # counted from the end of this round
        log.info(
            "purge round %s: %d of %d model(s) %s, %d leftover(s); %s %s; next in %s (at %s)",
            "stopped" if report.stopped else "done",
            chosen,
            len(report.items),
            "to remove" if report.dry_run else "removed",
            len(report.leftovers),
            "would free" if report.dry_run else "freed",
            format_bytes(report.freed_bytes),
            format_duration(every),
            datetime.fromtimestamp(time.time() + every, UTC).strftime("%H:%M:%S UTC"),
        )
        if not report.stopped:
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
                resumed = max(0, int(record.bytes_resumed))
            except (TypeError, ValueError):
                log.warning("skipped the outcome record %s: a field is not a number", path.name)
                continue
            reason = "" if record.kind != "failed" else (record.reason if record.reason in REASONS else "Other")
            self.metrics.fetches.labels(record.kind, reason).inc()
            self.metrics.fetch_duration.labels(record.kind).observe(seconds)
            self.metrics.downloaded_bytes.inc(downloaded)
            self.metrics.resumed_bytes.inc(resumed)
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
        root_open = open_to_all(self.layout.root)
        snapshot = Snapshot(time.time(), models, free, total, time.monotonic() - started, root_open)
        self.metrics.cache.snapshot = snapshot
        if self.cached_models is not None:
            failed = failed_before_any_file(self.layout, {m.key for m in models})
            self.sync_cached_models(self.cached_models, [*models, *failed])
        if self.warm_up is not None and self.settings.warm_up_file:
            self.write_warm_up(self.warm_up)
        return snapshot

    def write_warm_up(self, warm_up: Callable[[], Sequence[WarmModel]]) -> None:
        """This node's warm-up list, for the warm container; an API failure keeps the last one."""
        from modelcache.contract.warmup import dump_list
        from modelcache.runtime.kube import API_ERRORS

        try:
            models = warm_up()
        except API_ERRORS as err:
            log.warning(
                "could not read this node's warm-up list (next try in %s): %s", self._scan_text(), str(err)[:500]
            )
            return
        text = dump_list(models, node=self.settings.node_name).encode()
        target = Path(self.settings.warm_up_file)
        if target.is_file() and target.read_bytes() == text:
            return
        write_atomically(target, text)
        log.info("warm-up list of node %s: %s", self.settings.node_name, ", ".join(m.source for m in models) or "none")

    def sync_cached_models(self, cached_models: CachedModels, models: Sequence[CacheEntry]) -> None:
        """This volume's entries of the CachedModel objects; a failure is logged and retried at the next scan."""
        from modelcache.runtime.kube import API_ERRORS

        try:
            report = cached_models.sync(models, self.live_pods())
        except API_ERRORS as err:
            log.warning(
                "could not update the CachedModel objects (next try in %s): %s", self._scan_text(), str(err)[:500]
            )
            return
        if report.created or report.deleted or report.failed:
            log.info(
                "CachedModel objects: %d made, %d updated, %d deleted, %d failed",
                len(report.created),
                len(report.updated),
                len(report.deleted),
                len(report.failed),
            )

    def _scan_text(self) -> str:
        return format_duration(self.settings.scan_every.total_seconds())
