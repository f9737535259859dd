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
   they vanish at once), dead staging attempts, and for Hub models the snapshot and the blobs no
   other key refers to. Blobs are shared by every key of a repository, so they go only under the
   repository guard (modelcache.cache.locking.RepoGuard) held exclusively; when a download of the same
   repository holds it, they are left for the next round.

Every deletion is logged with the key and the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from modelcache.cache.files import list_names, make_shared_dir, tree_bytes, write_atomically
from modelcache.cache.layout import CacheLayout
from modelcache.cache.locking import LockSettings, LockState, ModelLock, RepoGuard
from modelcache.cache.markers import Marker, read_marker
from modelcache.cache.owners import Identity
from modelcache.cache.usage import usage_stamp
from modelcache.contract import sources
from modelcache.contract.errors import ContractError
from modelcache.contract.quantities import format_bytes
from modelcache.contract.wire import HUB_DIR

log = logging.getLogger(__name__)
TRASH_DIR = "trash"
STALE_LOCK_FILES_AFTER = 86400.0  # lock files moved aside by a takeover, kept a day for post-mortems


class RemovalRefusedError(Exception):
    """The model was not removed; the message says why and what to do."""


@dataclass(slots=True)
class Removed:
    key: str
    reason: str
    freed: int = 0
    deferred: list[str] = field(default_factory=list)  # what waits for the next round, and why


def remove_model(
    layout: CacheLayout,
    key: str,
    *,
    reason: str,
    identity: Identity,
    idle_for: float | None = None,
    recheck: Callable[[], str | None] | None = None,
    force: bool = False,
    busy_repos: Collection[str] = (),
    now: Callable[[], float] = time.time,
) -> Removed:
    """Remove one key (see the module docstring); raises RemovalRefusedError when it must not.

    `busy_repos`: Hub repository folders a live pod uses through another key (busy_repositories());
    their files stay, since a pod started before a refresh may read an older snapshot.
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
        return _remove_locked(
            layout, key, marker, reason=reason, idle_for=idle_for, recheck=recheck, busy_repos=busy_repos, now=now
        )
    finally:
        lock.release()


def _remove_locked(
    layout: CacheLayout,
    key: str,
    marker: Marker | None,
    *,
    reason: str,
    idle_for: float | None,
    recheck: Callable[[], str | None] | None,
    busy_repos: Collection[str],
    now: Callable[[], float],
) -> Removed:
    before = usage_stamp(layout, key)
    if idle_for is not None and before is not None and now() - before[1] / 1e9 < idle_for:
        raise RemovalRefusedError(f"{key} was used {now() - before[1] / 1e9:.0f} s ago, after it was chosen")
    marker = read_marker(layout, key) or marker  # re-read under the lock
    locked_out = _not_writable(layout.store / key)
    if locked_out is not None:
        raise RemovalRefusedError(
            f"{key} cannot be removed by uid {os.geteuid()}: {locked_out.relative_to(layout.root)} is not writable "
            f"for it (owner uid {locked_out.stat().st_uid}, mode {locked_out.stat().st_mode & 0o777:o}; an older "
            f"fetcher published it). Run `chmod -R a+rwX {layout.store / key}` as that uid or root, then retry"
        )
    marker_path = layout.marker_path(key)
    aside = marker_path.with_name(f".{marker_path.name}.removing-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(marker_path, aside)
        had_marker = True
    except FileNotFoundError:
        had_marker = False
    try:
        problem = recheck() if recheck is not None else None
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
    removed = Removed(key, reason)
    with contextlib.suppress(FileNotFoundError):
        layout.ready_link(key).unlink()
    removed.freed += _discard(layout, layout.store / key)
    removed.freed += _discard(layout, layout.staging_dir(key))
    if marker is not None and marker.path.startswith(HUB_DIR + "/"):
        folder = Path(marker.path).parts[1]  # the other keys' markers decide what of the repository stays
        freed, deferred = collect_hub_repo(layout, folder, busy=folder in busy_repos)
        removed.freed += freed
        removed.deferred.extend(deferred)
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


def discard_damaged(layout: CacheLayout, key: str, files: list[str], *, identity: Identity) -> None:
    """Before a repair: make the model not ready and drop its damaged files, under its lock.

    Hub models lose only the damaged blobs (the fetcher counts a blob of the right size as present);
    an s3:// or https:// model loses its whole version directory, which is only ever published whole.
    """
    lock = ModelLock(layout, key, identity=identity, settings=LockSettings())
    if lock.try_acquire(purpose="repair") is None:
        raise RemovalRefusedError(f"{key} is locked: a download is under way; repair it when that is done")
    try:
        marker = read_marker(layout, key)
        if marker is None:
            return
        layout.marker_path(key).unlink()
        model_dir = layout.root / marker.path
        if marker.path.startswith(HUB_DIR + "/"):
            blobs = model_dir.parent.parent / "blobs"
            for name in files:
                with contextlib.suppress(OSError):
                    blob = blobs / os.path.basename(os.readlink(model_dir / name))
                    log.warning("removing the damaged blob of %s before fetching it again", name)
                    blob.unlink()
        else:
            log.warning("removing %s before fetching it again", marker.path)
            _discard(layout, model_dir)
    finally:
        lock.release()


def busy_repositories(layout: CacheLayout, in_use: Collection[str]) -> set[str]:
    """The Hub repository folders of the models that live pods use."""
    folders = set()
    for key in in_use:
        marker = read_marker(layout, key)
        parts = Path(marker.path).parts if marker else ()
        if len(parts) > 1 and parts[0] == HUB_DIR:
            folders.add(parts[1])
    return folders


def collect_hub_repo(layout: CacheLayout, folder: str, *, busy: bool = False) -> tuple[int, list[str]]:
    """Delete what no ready marker of the repository refers to: snapshots, links, refs and blobs.

    Runs only while holding the repository guard exclusively, and only when no live pod uses a model
    of the repository (`busy`): a pod started before a refresh reads the previous snapshot, which no
    marker refers to any more. Returns (bytes freed, deferrals).
    """
    repo = layout.hub / folder
    if not repo.is_dir():
        return 0, []
    if busy:
        return 0, [f"the files of {folder} no ready model needs stay while a live pod uses a model of it"]
    guard = RepoGuard(layout, folder)
    if not guard.try_exclusive():
        return 0, [
            f"the files of {folder} stay until the next purge: a download of the same repository is under way "
            "(or this filesystem has no record locks)"
        ]
    try:
        return _collect_hub_repo(layout, repo), []
    finally:
        guard.release()


def _collect_hub_repo(layout: CacheLayout, repo: Path) -> int:
    needed: dict[str, set[str]] = {}  # snapshot commit -> file paths some ready marker needs
    refs: dict[str, str] = {}  # revision -> commit, for the ready markers of a branch or tag
    for name in list_names(layout.markers):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        marker = read_marker(layout, name[: -len(".json")])
        parts = Path(marker.path).parts if marker else ()
        if marker is not None and len(parts) == 4 and parts[:3] == (HUB_DIR, repo.name, "snapshots"):
            needed.setdefault(parts[3], set()).update(f.path for f in marker.files)
            with contextlib.suppress(ContractError):
                source = sources.parse_source(marker.source)
                if isinstance(source, sources.HubSource) and not source.pinned:
                    refs[source.revision] = marker.version
    freed = 0
    snapshots = repo / "snapshots"
    for commit in list_names(snapshots):
        if commit not in needed:
            freed += _discard(layout, snapshots / commit)
            log.info("removed snapshot %s/%s: no ready model refers to it", repo.name, commit)
            continue
        for directory, _, names in os.walk(snapshots / commit):
            for name in names:
                link = Path(directory) / name
                if str(link.relative_to(snapshots / commit)) not in needed[commit]:
                    link.unlink()
    for directory, _, names in os.walk(repo / "refs"):
        for name in names:
            ref = Path(directory) / name
            with contextlib.suppress(OSError):
                if ref.read_text().strip() not in needed:
                    ref.unlink()
    for revision, commit in refs.items():  # a branch another model still needs must resolve offline
        ref = repo / "refs" / revision
        if not ref.exists():
            make_shared_dir(ref.parent)
            write_atomically(ref, commit.encode())
    kept = set()
    for directory, _, names in os.walk(snapshots):
        for name in names:
            with contextlib.suppress(OSError):
                kept.add(os.path.basename(os.readlink(Path(directory) / name)))
    for blob in list_names(repo / "blobs"):
        if blob not in kept:
            path = repo / "blobs" / blob
            with contextlib.suppress(OSError):
                freed += path.stat().st_size
                path.unlink()
    if not needed:
        freed += _discard(layout, repo)
        log.info("removed %s: no ready model refers to it any more", repo.name)
    return freed


@dataclass(frozen=True, slots=True)
class Leftover:
    path: str
    reason: str
    bytes: int


def collect_garbage(
    layout: CacheLayout,
    *,
    identity: Identity,
    staging_after: float,
    outcomes_after: float,
    in_use: Collection[str] = (),
    dry_run: bool = False,
    now: float | None = None,
) -> list[Leftover]:
    """Clean what dead fetchers and interrupted removals left; every item only under its lock.

    - staging attempts with no progress for `staging_after` seconds, of keys whose lock is free;
    - store/ directories and ready/ links of keys with no ready marker (an interrupted publish or rm);
    - snapshots and blobs of Hub repositories no ready marker refers to (under the repository guard),
      and store/ versions other than the ready one, unless a live pod uses the model (`in_use` keys);
    - the trash, marker tombstones, lock files moved aside by takeovers, outcome records older than
      `outcomes_after` seconds (the cache agent keeps only the newest counted one per model anyway).
    """
    current = time.time() if now is None else now
    found: list[Leftover] = []
    for key in sorted(
        set(list_names(layout.staging)) | set(list_names(layout.store)) | set(list_names(layout.ready_dir))
    ):
        if key.startswith(".") or read_marker(layout, key) is not None:
            if not key.startswith("."):
                found.extend(_dead_attempts(layout, key, identity, staging_after, current, dry_run))
            continue
        found.extend(_unmarked(layout, key, identity, staging_after, current, dry_run))
    busy = busy_repositories(layout, in_use)
    for folder in list_names(layout.hub):
        if folder.startswith("models--") and not dry_run:
            freed, _ = collect_hub_repo(layout, folder, busy=folder in busy)
            if freed:
                found.append(Leftover(f"hub/{folder}", "files no ready model refers to", freed))
    trash = layout.state / TRASH_DIR
    for name in list_names(trash):
        found.append(Leftover(f".modelcache/{TRASH_DIR}/{name}", "left by an interrupted removal", 0))
        if not dry_run:
            shutil.rmtree(trash / name, ignore_errors=True)
    for directory, pattern, after, why in (
        (layout.markers, ".removing-", 0.0, "marker of an interrupted removal"),
        (layout.locks, ".stale-", STALE_LOCK_FILES_AFTER, "lock file moved aside by a takeover"),
        (layout.outcomes, "", outcomes_after, f"outcome record older than {outcomes_after / 86400:g} day(s)"),
    ):
        for name in list_names(directory):
            path = directory / name
            if pattern in name and _older(path, after, current):
                found.append(Leftover(str(path.relative_to(layout.root)), why, 0))
                if not dry_run:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
    for item in found:
        log.info(
            "%s %s: %s (%s)", "would remove" if dry_run else "removed", item.path, item.reason, format_bytes(item.bytes)
        )
    return found


def _dead_attempts(
    layout: CacheLayout, key: str, identity: Identity, after: float, now: float, dry_run: bool
) -> list[Leftover]:
    base = layout.staging_dir(key)
    old = [entry for entry in list_names(base) if _older(base / entry, after, now)]
    if not old:
        return []
    with _holding(layout, key, identity, "purge: dead staging attempts") as held:
        if not held:
            return []
        found = []
        for entry in old:
            size = tree_bytes(base / entry)
            found.append(Leftover(f".modelcache/staging/{key}/{entry}", "download attempt with no progress", size))
            if not dry_run:
                _discard(layout, base / entry)
        return found


def _old_versions(layout: CacheLayout, marker: Marker, identity: Identity, dry_run: bool) -> list[Leftover]:
    """store/<key>/<version> directories a refresh replaced, when no live pod uses the key."""
    base = layout.store / marker.key
    current = Path(marker.path).name
    old = [name for name in list_names(base) if name != current and not name.startswith(".")]
    if not old:
        return []
    with _holding(layout, marker.key, identity, "purge: replaced versions") as held:
        if not held:
            return []
        found = []
        for name in old:
            found.append(
                Leftover(f"store/{marker.key}/{name}", "version replaced by a refresh", tree_bytes(base / name))
            )
            if not dry_run:
                _discard(layout, base / name)
        return found


def _unmarked(
    layout: CacheLayout, key: str, identity: Identity, after: float, now: float, dry_run: bool
) -> list[Leftover]:
    """A key with files but no ready marker: its download died (after `after`) or a removal stopped."""
    traces = [
        p for p in (layout.store / key, layout.staging_dir(key), layout.ready_link(key)) if p.is_symlink() or p.exists()
    ]
    if not traces or not all(_older(p, after, now) for p in traces):
        return []
    with _holding(layout, key, identity, "purge: interrupted model") as held:
        if not held:
            return []
        if read_marker(layout, key) is not None:
            return []  # published meanwhile
        found = []
        for path in traces:
            size = 0 if path.is_symlink() else tree_bytes(path)
            found.append(Leftover(str(path.relative_to(layout.root)), "part of a model that never became ready", size))
            if dry_run:
                continue
            if path.is_symlink():
                path.unlink()
            else:
                _discard(layout, path)
        return found


@contextlib.contextmanager
def _holding(layout: CacheLayout, key: str, identity: Identity, purpose: str) -> Iterator[bool]:
    """The model's lock, taken without waiting: yields whether we hold it (then nobody downloads it)."""
    lock = ModelLock(layout, key, identity=identity, settings=LockSettings())
    try:
        yield lock.try_acquire(purpose=purpose) is LockState.HELD
    finally:
        lock.release()


def _discard(layout: CacheLayout, path: Path) -> int:
    """Move a tree to the trash (it vanishes at once), then delete it; the bytes it held."""
    if not path.exists():
        return 0
    size = tree_bytes(path)
    trash = layout.state / TRASH_DIR
    make_shared_dir(trash)
    target = trash / f"{path.name}.{uuid.uuid4().hex[:12]}"
    try:
        os.rename(path, target)
    except OSError as err:  # never delete in place: a half-deleted published tree could be taken as whole
        log.warning("could not remove %s (%s); it stays", path.relative_to(layout.root), err.strerror or err)
        return 0
    shutil.rmtree(target, ignore_errors=True)
    return size


def _not_writable(tree: Path) -> Path | None:
    """The first directory of `tree` this process may not change (a move to the trash needs them all)."""
    for directory, _, _ in os.walk(tree):
        if not os.access(directory, os.W_OK):
            return Path(directory)
    return None


def _older(path: Path, seconds: float, now: float) -> bool:
    try:
        return now - path.lstat().st_mtime >= seconds
    except OSError:
        return False
