"""Removing models from the shared cache without ever pulling one from under a pod that is starting.

The protocol for one key (``remove_model``):

1. Take the model's lock without waiting. A held lock means a download (or another removal) is under
   way: refuse. A fetcher that starts meanwhile waits for us, as it would for a download.
2. Read the usage stamp (fetchers touch it *before* they look for the marker) and check the idle time
   under the lock, so a use since the caller's decision is seen.
3. Move the ready marker aside. From now on, a fetcher's check finds no marker and goes for the lock.
4. Let the caller re-check live pods, then read the usage stamp again. If either changed, a pod may
   have found the model ready just before step 3: put the marker back and refuse. A fetcher that
   looks after step 3 finds no marker and waits for the lock: once we are done, it downloads again.
5. Only then delete: MODEL_PATH's link, the model's files (moved to ``.modelcache/trash`` first, so
   they vanish at once), its staging attempts, and for Hub models what of the repository no other
   ready model and no live pod's pin refers to. That goes only under the repository guard
   (modelcache.cache.locking.RepoGuard) held exclusively; when a download of the same repository
   holds it, it is left for the next round (modelcache.cache.collection).

Every deletion is logged with the key and the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelcache.cache.collection import Collected, collect_repo, discard
from modelcache.cache.files import tree_bytes
from modelcache.cache.layout import CacheLayout
from modelcache.cache.locking import LockState, ModelLock
from modelcache.cache.markers import Marker, read_marker
from modelcache.cache.owners import Identity
from modelcache.cache.patience import LockSettings
from modelcache.cache.pins import LiveUse
from modelcache.cache.usage import usage_stamp
from modelcache.contract.quantities import format_bytes

log = logging.getLogger(__name__)


class RemovalRefusedError(Exception):
    """The model was not removed; the message says why and what to do."""


@dataclass(slots=True)
class Removed:
    key: str
    reason: str
    freed: int = 0
    deferred: list[str] = field(default_factory=list)  # what waits for the next round, and why


@dataclass(frozen=True, slots=True)
class RemovalCheck:
    """What must still hold when the removal commits: the model idle for this long, no new live pod."""

    idle_for: float | None = None
    recheck: Callable[[], str | None] | None = None


def remove_model(
    layout: CacheLayout,
    key: str,
    *,
    reason: str,
    identity: Identity,
    use: LiveUse,
    check: RemovalCheck = RemovalCheck(),
    force: bool = False,
    now: Callable[[], float] = time.time,
) -> Removed:
    """Remove one key (see the module docstring); raises RemovalRefusedError when it must not.

    `use` is what live pods need kept (their keys and pins): the files of the key's Hub repository
    that another ready model or a live pod's pin refers to stay.
    """
    marker = read_marker(layout, key)
    lock = ModelLock(layout, key, identity=identity, settings=LockSettings(), source=marker.source if marker else "")
    state = lock.try_acquire(purpose=f"removing: {reason}"[:200])
    if state is None and not force:
        raise RemovalRefusedError(
            f"{key} is locked: a download or another removal is under way (`modelcache ls` shows the holder). "
            "Retry when it is done; --force removes it anyway (only for a holder that is gone for good)"
        )
    if state is LockState.UNSUPPORTED and not force:
        raise RemovalRefusedError(
            f"{key} cannot be locked: this filesystem has no record locks, so a fetcher starting now could "
            "not be kept out. Remove it while no pod of this model starts, with --force"
        )
    try:
        marker = read_marker(layout, key) or marker  # re-read under the lock
        _check_removable(layout, key, check, now)
        _take_marker(layout, key, check)
        return _remove_files(layout, key, marker, reason=reason, use=use)
    finally:
        lock.release()


def _check_removable(layout: CacheLayout, key: str, check: RemovalCheck, now: Callable[[], float]) -> None:
    before = usage_stamp(layout, key)
    if check.idle_for is not None and before is not None and now() - before[1] / 1e9 < check.idle_for:
        raise RemovalRefusedError(f"{key} was used {now() - before[1] / 1e9:.0f} s ago, after it was chosen")
    locked_out = _not_writable(layout.store / key)
    if locked_out is not None:
        info = locked_out.stat()
        raise RemovalRefusedError(
            f"{key} cannot be removed by uid {os.geteuid()}: {locked_out.relative_to(layout.root)} is not writable "
            f"for it (owner uid {info.st_uid}, mode {info.st_mode & 0o777:o}; an older fetcher published it). "
            f"Run `chmod -R a+rwX {layout.store / key}` as that uid or root, then retry"
        )


def _take_marker(layout: CacheLayout, key: str, check: RemovalCheck) -> None:
    """Steps 3 and 4: the marker aside, the last checks, then either gone for good or put back."""
    before = usage_stamp(layout, key)
    marker_path = layout.marker_path(key)
    aside = marker_path.with_name(f".{marker_path.name}.removing-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(marker_path, aside)
        had_marker = True
    except FileNotFoundError:
        had_marker = False
    try:
        problem = check.recheck() if check.recheck is not None else None
    except Exception as err:  # noqa: BLE001 (the API is down: the model stays, the round goes on)
        problem = f"could not re-check the live pods ({type(err).__name__}: {str(err)[:200]})"
    if problem is None and usage_stamp(layout, key) != before:  # last: the narrowest window
        problem = "it was used while being removed (a pod started)"
    if problem is not None:
        if had_marker:
            os.rename(aside, marker_path)
        raise RemovalRefusedError(f"{key} was not removed: {problem}")
    if had_marker:
        os.unlink(aside)  # from here on a crash leaves an unready model, which the purge cleans up


def _remove_files(layout: CacheLayout, key: str, marker: Marker | None, *, reason: str, use: LiveUse) -> Removed:
    removed = Removed(key, reason)
    with contextlib.suppress(FileNotFoundError):
        layout.ready_link(key).unlink()
    for tree in (layout.store / key, layout.staging_dir(key)):
        size = _tree_size(tree)
        if discard(layout, tree):
            removed.freed += size
    repo = layout.hub_repo_of(marker.path) if marker is not None else None
    if repo is not None:  # the other keys' markers and the live pods' pins decide what of it stays
        collected = Collected()
        removed.deferred += collect_repo(layout, repo, use=use, planned=None, result=collected, about=key)
        removed.freed += collected.freed
    with contextlib.suppress(FileNotFoundError):
        layout.usage_path(key).unlink()
    log.info(
        "removed %s (%s): %s freed%s",
        key,
        reason,
        format_bytes(removed.freed),
        "; " + "; ".join(removed.deferred) if removed.deferred else "",
        extra={"model_key": key},
    )
    return removed


def unready(layout: CacheLayout, key: str, *, identity: Identity) -> None:
    """Before the fetcher publishes a model again whose links (not files) are wrong: drop its marker, under its lock.

    Nothing else goes: the files are intact (verify found no file damaged), the fetcher re-links them, and
    a live pod's pin keeps reading them meanwhile. Damaged files are repaired in place instead
    (fetcher.repair: verified copies renamed over them).
    """
    lock = ModelLock(layout, key, identity=identity, settings=LockSettings())
    if lock.try_acquire(purpose="repair") is None:
        raise RemovalRefusedError(f"{key} is locked: a download is under way; repair it when that is done")
    try:
        log.warning("publishing %s again: its links are wrong", key, extra={"model_key": key})
        layout.marker_path(key).unlink(missing_ok=True)
    finally:
        lock.release()


def _tree_size(path: Path) -> int:
    return tree_bytes(path) if path.exists() else 0


def _not_writable(tree: Path) -> Path | None:
    """The first directory of `tree` this process may not change (a move to the trash needs them all)."""
    for directory, _, _ in os.walk(tree):
        if not os.access(directory, os.W_OK):
            return Path(directory)
    return None
