"""ensure_model(): marker check -> resolve -> lock -> re-check -> stage -> verify -> publish.

The hit path (the marker is there and consistent) imports no network library and makes no network
call: most pod starts take it. Everything after it is correct without the lock: downloads go to a
private staging directory, are verified, and are published by atomic renames with the marker written
last. The lock only keeps pods that start together from downloading the same bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fetcher.config import FetchSettings
from modelcache import __version__
from modelcache.cache.files import symlink_atomically
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import Marker, check_ready
from modelcache.cache.outcomes import OutcomeRecord, write_outcome
from modelcache.cache.usage import record_pin, record_use
from modelcache.contract.errors import CacheNotWritableError, ConfigError, DiskFullError, FetchError
from modelcache.contract.quantities import format_bytes
from modelcache.contract.sources import HttpSource, HubSource, S3Source
from modelcache.contract.wire import PIN_MOUNT_PATH, PIN_VOLUME_NAME

if TYPE_CHECKING:  # the hit path does not import them: they bring threads and the transfer machinery
    from fetcher.plan import Plan
    from fetcher.sources import Source
    from fetcher.transfer import Tally
    from modelcache.cache.locking import ModelLock

log = logging.getLogger(__name__)
USER_AGENT = f"modelcache-fetcher/{__version__}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened, for the log line and the termination message."""

    kind: Literal["hit", "waited", "downloaded"]
    key: str
    version: str
    path: str
    bytes_downloaded: int = 0  # fetched from the source by this run
    bytes_resumed: int = 0  # already staged by an earlier, interrupted attempt
    seconds: float = 0.0
    waited_seconds: float = 0.0

    shared: bool = True

    @classmethod
    def of(
        cls,
        kind: Literal["hit", "waited", "downloaded"],
        settings: FetchSettings,
        marker: Marker,
        started: float,
        *,
        waited_seconds: float = 0.0,
        bytes_downloaded: int = 0,
        bytes_resumed: int = 0,
    ) -> Outcome:
        return cls(
            kind,
            settings.key,
            marker.version,
            marker.path,
            bytes_downloaded=bytes_downloaded,
            bytes_resumed=bytes_resumed,
            seconds=time.monotonic() - started,
            waited_seconds=waited_seconds,
            shared=settings.shared,
        )

    def summary(self) -> str:
        where = "" if self.shared else " [pod-local storage: this pod opted out of the shared cache]"
        return self._what() + where

    def _what(self) -> str:
        if self.kind == "hit":
            return f"cache hit: {self.path} (version {self.version}) in {self.seconds:.2f} s"
        if self.kind == "waited":
            return (
                f"ready after waiting {self.waited_seconds:.0f} s for another pod's download: {self.path} "
                f"(version {self.version})"
            )
        resumed = f", resumed {format_bytes(self.bytes_resumed)} already staged" if self.bytes_resumed else ""
        return (
            f"downloaded {format_bytes(self.bytes_downloaded)} in {self.seconds:.1f} s{resumed} "
            f"(waited {self.waited_seconds:.0f} s for the lock): {self.path} (version {self.version})"
        )


def ensure_model(settings: FetchSettings, *, environ: Mapping[str, str]) -> Outcome:
    """Make the model ready under the cache root, and the pod's pin point at the version it got."""
    try:
        outcome = _make_ready(settings, environ)
        if settings.pin_path is not None and settings.shared:
            # first the record, then the link: no moment where the pod reads an unrecorded version
            record_pin(
                CacheLayout(settings.cache_root),
                namespace=settings.namespace,
                pod=settings.pod,
                uid=settings.pod_uid,
                key=settings.key,
                model_dir=outcome.path,
            )
    except OSError as err:
        from modelcache.cache.permissions import denied_message, is_denied  # only on this failure

        if is_denied(err) and _on_volume(err, settings.cache_root):
            raise CacheNotWritableError(
                denied_message(err, settings.cache_root, uid_setting=FETCHER_UID_SETTING)
            ) from err
        raise
    if settings.pin_path is not None:
        pin(settings.pin_path, str(settings.cache_root / outcome.path))
    return outcome


FETCHER_UID_SETTING = "MODELCACHE_FETCHER_UID"  # webhook/config.py: the UID of fetchers in pods that run as root


def _on_volume(err: OSError, root: Path) -> bool:
    paths = [p for p in (err.filename, err.filename2) if p]
    return any(Path(p) == root or root in Path(p).parents for p in paths)


def pin(path: Path, target: str) -> None:
    """Link the pod's pin (the app's MODEL_PATH) to the exact version directory it got.

    That directory is immutable and stays while a live pod uses the model (the purge's rule), so a
    refresh that moves ready/<key> and refs/<revision> later never changes what this pod reads.
    """
    try:
        symlink_atomically(target, path)
    except OSError as err:
        raise ConfigError(
            f"cannot link {path} to {target} ({err.strerror or err}): the webhook mounts the "
            f"{PIN_VOLUME_NAME} emptyDir at {PIN_MOUNT_PATH} for it; check the pod spec"
        ) from err


def _make_ready(settings: FetchSettings, environ: Mapping[str, str]) -> Outcome:
    started = time.monotonic()
    layout = CacheLayout(settings.cache_root)
    if not settings.refresh:
        # Use is recorded before the check, never after: the purger removes the marker first and then
        # looks at the usage time again, so either it sees this use, or this check sees no marker.
        record_use(layout, settings.key)
        marker = check_ready(layout, settings.key)
        if marker is not None:
            return Outcome.of("hit", settings, marker, started)
    return _fetch_under_lock(settings, layout, environ, started)


def _fetch_under_lock(
    settings: FetchSettings, layout: CacheLayout, environ: Mapping[str, str], started: float
) -> Outcome:
    """Lock, re-check, and only then resolve and download.

    A pod that waited for another pod's download finds the marker after the lock and stops there: it
    never resolves (no Hub call, no rate limit spent, no network library imported). The model it gets
    is the version the cache resolved, the same no-drift rule as for any later pod.
    """
    layout.ensure()
    lock = model_lock(settings, layout)
    waiting_since = time.monotonic()
    lock.acquire()
    waited = time.monotonic() - waiting_since
    downloaded: Tally | None = None  # None: nothing was downloaded, the model was ready after the lock
    try:
        marker = None if settings.refresh else check_ready(layout, settings.key)
        if marker is None:
            phases = Phases(waited)
            source = open_source(settings, layout, environ)
            phases.done("open the source")
            try:
                plan = resolve(source, settings)
                phases.done("resolve")
                log.info(
                    "%s: %d file(s), %s, version %s",
                    settings.source.uri,
                    len(plan.files),
                    format_bytes(plan.total_bytes),
                    plan.version,
                )
                marker = check_ready(layout, settings.key)
                if marker is None or marker.version != plan.version:  # a refresh may find nothing new
                    marker, downloaded = _download_and_publish(settings, layout, source, plan, lock, phases)
            finally:
                source.close()
            log.info("phases: %s", phases)
    finally:
        lock.release()
    record_use(layout, settings.key)
    if downloaded is not None:
        return Outcome.of(
            "downloaded",
            settings,
            marker,
            started,
            waited_seconds=waited,
            bytes_downloaded=downloaded.fetched,
            bytes_resumed=downloaded.resumed,
        )
    kind: Literal["hit", "waited"] = "waited" if waited >= settings.lock.poll else "hit"
    return Outcome.of(kind, settings, marker, started, waited_seconds=waited)


def model_lock(settings: FetchSettings, layout: CacheLayout) -> ModelLock:
    """The model's lock, held in this fetcher's name (its owner record says pod, node and source)."""
    from modelcache.cache.locking import ModelLock
    from modelcache.cache.owners import Identity

    return ModelLock(
        layout,
        settings.key,
        identity=Identity.here(pod=settings.pod, namespace=settings.namespace, node=settings.node),
        settings=settings.lock,
        source=settings.source.uri,
        include=settings.include,
    )


def resolve(source: Source, settings: FetchSettings) -> Plan:
    """The source's resolve(), with the same retry policy as downloads; a listing no directory holds is refused."""
    from fetcher.plan import check_listing
    from fetcher.retrying import retry

    plan = retry(
        source.resolve,
        policy=settings.retry,
        what=f"resolving {settings.source.uri}",
        advice="Check that the source is reachable from the node.",
    )
    return check_listing(plan, source=settings.source.uri)


def open_source(settings: FetchSettings, layout: CacheLayout, environ: Mapping[str, str]) -> Source:
    """The adapter for the source's scheme; its library is imported only now (off the hit path)."""
    source = settings.source
    if isinstance(source, S3Source):
        from fetcher.sources.s3 import S3Adapter

        return S3Adapter(
            source,
            include=settings.include,
            environ=environ,
            workers=settings.workers,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            secret_hint=settings.secret_hint,
        )
    from fetcher.http_client import HttpClient

    http = HttpClient(
        workers=settings.workers,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        user_agent=USER_AGENT,
    )
    if isinstance(source, HubSource):
        from fetcher.sources.hf import HubAdapter

        return HubAdapter(
            source,
            include=settings.include,
            layout=layout,
            refresh=settings.refresh,
            environ=environ,
            http=http,
            secret_hint=settings.secret_hint,
        )
    from fetcher.sources.http import HttpAdapter

    if not isinstance(source, HttpSource):  # pragma: no cover - the three kinds are exhaustive
        raise ConfigError(f"no adapter for {source.uri}")
    return HttpAdapter(source, environ=environ, http=http, secret_hint=settings.secret_hint)


class Phases:
    """Where a cold fetch spends its time, for the log (docs/benchmarks.md has the breakdown)."""

    def __init__(self, waited: float) -> None:
        self.spent: list[tuple[str, float]] = [("wait for the lock", waited)]
        self._since = time.monotonic()

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self.spent.append((phase, now - self._since))
        self._since = now

    def __str__(self) -> str:
        return ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in self.spent)


def _download_and_publish(
    settings: FetchSettings, layout: CacheLayout, source: Source, plan: Plan, lock: ModelLock, phases: Phases
) -> tuple[Marker, Tally]:
    from fetcher import staging
    from fetcher.publish import publish_hub, publish_ready, publish_store
    from fetcher.transfer import check_free_space, download_with
    from modelcache.cache.layout import blob_name
    from modelcache.cache.locking import LockState, RepoGuard
    from modelcache.cache.owners import Progress

    exclusive = lock.state is LockState.HELD  # only then is every other attempt of this key dead
    attempt = staging.claim_attempt(
        layout, settings.key, plan.version, exclusive=exclusive, stale_after=settings.lock.stale_after
    )
    progress = Progress(plan.total_bytes)
    lock.start_heartbeat(progress, attempt=attempt.name, touch=attempt)
    hub = settings.source if isinstance(settings.source, HubSource) else None
    missing = plan.files
    guard = None
    if hub is not None:  # blobs another key already published need no download
        repo = layout.hub_repo(hub.repo_id)
        guard = RepoGuard(layout, repo.folder, timeout=settings.lock.timeout)
        guard.share()  # held until published, so the purger cannot delete a blob we count on
        missing = tuple(f for f in plan.files if not _has_size(repo.blob(blob_name(f.sha256, f.git_sha1)), f.size))
    progress.add(plan.total_bytes - sum(f.size for f in missing))
    try:
        check_free_space(layout.root, sum(f.size - staging.staged_bytes(attempt, f) for f in missing))
        phases.done("prepare")
        tally = download_with(settings, source, missing, attempt, on_bytes=progress.add)
        phases.done("download and verify")
        if hub is not None:
            builder = settings.key if exclusive else f"{settings.key}.{attempt.name}"
            model_dir = publish_hub(layout, hub, plan, attempt, builder=builder)
        else:
            model_dir = publish_store(layout, settings.key, plan, attempt)
        marker = publish_ready(
            layout,
            key=settings.key,
            source=settings.source.uri,
            include=settings.include,
            plan=plan,
            model_dir=model_dir,
        )
        phases.done("publish")
    except DiskFullError:
        if not any(staging.staged_bytes(attempt, f) for f in missing):
            staging.remove_attempt(attempt)  # nothing in it to resume
        raise  # what is staged stays (verified files, and the partial one): the next start resumes it
    finally:
        if guard is not None:
            guard.release()
    staging.remove_attempt(attempt)
    if exclusive:
        staging.remove_dead_attempts(layout, settings.key)
    log.info("published %s at %s; %s is ready", settings.source.uri, marker.path, settings.model_path)
    return marker, tally


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def record_run(settings: FetchSettings, outcome: Outcome | None, error: FetchError | None, seconds: float) -> None:
    """The outcome record on the shared volume (a pod that opted out has no shared volume to tell)."""
    if not settings.shared or isinstance(error, CacheNotWritableError):
        return  # no shared volume to tell, or one that refuses our writes
    write_outcome(
        CacheLayout(settings.cache_root),
        OutcomeRecord(
            kind=outcome.kind if outcome else "failed",
            key=settings.key,
            source=settings.source.uri,
            include=settings.include,
            at=time.time(),
            version=outcome.version if outcome else "",
            bytes_downloaded=outcome.bytes_downloaded if outcome else 0,
            bytes_resumed=outcome.bytes_resumed if outcome else 0,
            seconds=seconds,
            waited_seconds=outcome.waited_seconds if outcome else 0.0,
            reason=error.reason if error else "",
            message=str(error) if error else "",
            pod=settings.pod,
            namespace=settings.namespace,
            node=settings.node,
        ),
    )
