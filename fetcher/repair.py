"""Repair damaged files of a ready model without a moment where a reader finds one missing.

`modelcache verify --repair`: the replacement of each damaged file is downloaded into a private
staging attempt and verified there against the digests the ready marker recorded, and only then renamed
over the damaged file (over the blob, for hf:// models, so every snapshot link keeps resolving). The
marker stays: pods go on starting (they were reading the damaged bytes anyway; now they read the good
ones), and the version repaired is the marker's, never a newer one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from fetcher.config import FetchSettings
from fetcher.plan import Plan, RemoteFile
from modelcache.cache.files import fsync_dir, make_shared_dir, symlink_atomically
from modelcache.cache.layout import CacheLayout, blob_name
from modelcache.cache.markers import Marker, read_marker
from modelcache.contract.errors import IntegrityError, NotFoundError
from modelcache.contract.quantities import format_bytes
from modelcache.contract.sources import HubSource

log = logging.getLogger("fetcher")


def repair_files(settings: FetchSettings, paths: Sequence[str], *, environ: Mapping[str, str]) -> str:
    """Replace these files of the ready model `settings.key` with verified copies; a one-line summary."""
    from fetcher import staging
    from fetcher.fetch import model_lock, open_source, resolve
    from fetcher.transfer import download_with
    from modelcache.cache.locking import RepoGuard
    from modelcache.cache.owners import Progress

    layout = CacheLayout(settings.cache_root)
    lock = model_lock(settings, layout)
    lock.acquire()
    try:
        marker = read_marker(layout, settings.key)
        if marker is None:
            raise NotFoundError(f"{settings.key} is no longer ready (purged or removed meanwhile); nothing repaired")
        pinned = _pinned(settings, marker)
        source = open_source(pinned, layout, environ)
        guard = None
        try:
            files = _replacements(resolve(source, pinned), marker, paths)
            attempt = staging.claim_attempt(
                layout, settings.key, marker.version, exclusive=True, stale_after=settings.lock.stale_after
            )
            if isinstance(pinned.source, HubSource):
                guard = RepoGuard(layout, layout.hub_repo(pinned.source.repo_id).folder, timeout=settings.lock.timeout)
                guard.share()  # the purge may not remove the blobs we are about to replace
            progress = Progress(sum(f.size for f in files))
            lock.start_heartbeat(progress, attempt=attempt.name, touch=attempt)
            download_with(settings, source, files, attempt, on_bytes=progress.add)
            for file in files:
                _replace(layout, marker, file, staging.staged_path(attempt, file))
            staging.remove_attempt(attempt)
        finally:
            if guard is not None:
                guard.release()
            source.close()
    finally:
        lock.release()
    return f"repaired {len(files)} file(s), {format_bytes(sum(f.size for f in files))}, of version {marker.version}"


def _pinned(settings: FetchSettings, marker: Marker) -> FetchSettings:
    """The settings that resolve exactly the marker's version: a Hub commit; S3 and HTTPS are checked after."""
    if isinstance(settings.source, HubSource):
        return dataclasses.replace(settings, source=dataclasses.replace(settings.source, revision=marker.version))
    return settings


def _replacements(plan: Plan, marker: Marker, paths: Sequence[str]) -> tuple[RemoteFile, ...]:
    if plan.version != marker.version:
        raise NotFoundError(
            f"{marker.source} is now version {plan.version}, and this cache holds {marker.version}, which the "
            "source no longer serves: a repair would mix two versions, so nothing was repaired. "
            "`modelcache refresh` fetches the new version whole"
        )
    recorded = {f.path: f for f in marker.files}
    offered = {f.path: f for f in plan.files}
    chosen = []
    for path in dict.fromkeys(paths):
        file = offered.get(path)
        if path not in recorded or file is None:
            raise NotFoundError(f"{marker.source} at {marker.version} has no file {path!r}; nothing was repaired")
        if file.entry() != recorded[path]:
            raise IntegrityError(
                f"{marker.source} at {marker.version} now describes {path} as {file.size} bytes with other digests "
                f"than the ready marker recorded ({recorded[path].size} bytes): nothing was repaired; check the source"
            )
        chosen.append(file)
    return tuple(chosen)


def _replace(layout: CacheLayout, marker: Marker, file: RemoteFile, staged: Path) -> None:
    """Rename the verified copy over the damaged file: readers see the old bytes or the new, never nothing."""
    model_dir = layout.root / marker.path
    repo = layout.hub_repo_of(marker.path)
    if repo is None:
        target = model_dir / file.path
        make_shared_dir(target.parent)
        os.replace(staged, target)
        fsync_dir(target.parent)
    else:
        target = repo.blob(blob_name(file.sha256, file.git_sha1))
        os.replace(staged, target)
        fsync_dir(target.parent)
        link = model_dir / file.path
        wanted = os.path.relpath(target, link.parent)
        if _readlink(link) != wanted:  # a link that was lost or changed: put it back, atomically too
            make_shared_dir(link.parent)
            symlink_atomically(wanted, link)
    log.info("replaced %s of %s with a verified copy (%s)", file.path, marker.path, format_bytes(file.size))


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None
