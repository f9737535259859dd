"""Garbage collection, plan then execute: find every leftover first, then remove each under its guard.

:func:`plan_collection` reads the volume and lists what is garbage, with the bytes it holds, and changes
nothing (a dry run is exactly this list). :func:`collect` removes a plan: it takes each item's guard (the
model's lock for a model's files, the repository guard held exclusively for a Hub repository's), plans
that part again under the guard, and removes only what is still garbage there; what it cannot guard now
waits for the next round. What is garbage:

- a model's download attempts with no progress for ``staging_after`` (its lock free);
- the files of a key with no ready marker (a publication or removal that stopped), once as old;
- ``store/<key>/<version>`` directories other than the ready one that no live pod pins;
- in a Hub repository: snapshots no ready marker and no live pod's pin refers to (and those being built
  by a publication that died), links a marker does not list, refs to commits that go, blobs no kept
  link points to; the whole repository once nothing of it is kept;
- the trash of interrupted removals, marker tombstones, lock files a takeover moved aside (after a day),
  outcome records older than ``outcomes_after``, pin records of pods that are gone, and temporary files
  of interrupted writes.

A model a live pod uses without a pin record (started by an older fetcher) keeps every version: which
one it reads is unknown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from modelcache.cache.files import list_names, make_shared_dir, tree_bytes, write_atomically
from modelcache.cache.layout import CacheLayout, HubRepo
from modelcache.cache.locking import LockState, ModelLock, RepoGuard
from modelcache.cache.markers import Marker, read_marker, read_markers
from modelcache.cache.owners import Identity
from modelcache.cache.patience import LockSettings
from modelcache.cache.pins import LiveUse, read_pins
from modelcache.contract.errors import ContractError
from modelcache.contract.quantities import format_bytes, format_duration
from modelcache.contract.sources import HubSource, parse_source

log = logging.getLogger(__name__)
STALE_LOCK_FILES_AFTER = 86400.0  # lock files moved aside by a takeover, kept a day for post-mortems
PIN_RECORDS_AFTER = 3600.0  # a gone pod's record; a pod's own record is never older than its fetcher run
_TOMBSTONE = ".removing-"


class Kind(Enum):
    """What a leftover is, and so what guards it."""

    DEAD_ATTEMPT = "download attempt with no progress"
    UNREADY = "part of a model that never became ready"
    OLD_VERSION = "version no ready marker and no live pod refers to"
    SNAPSHOT = "snapshot no ready marker and no live pod refers to"
    UNFINISHED_SNAPSHOT = "snapshot of a publication that did not finish"
    SNAPSHOT_LINK = "file of a snapshot that no ready marker lists"
    REF = "ref to a commit that is not kept"
    BLOB = "blob no kept snapshot links to"
    REPOSITORY = "repository no ready model or live pod refers to"
    TRASH = "left by an interrupted removal"
    TOMBSTONE = "marker of an interrupted removal"
    STALE_LOCK = "lock file moved aside by a takeover"
    OUTCOME = "outcome record past its age"
    STALE_PIN = "pin record of a pod that is gone"
    TEMPORARY = "temporary file of an interrupted write"


@dataclass(frozen=True, slots=True)
class Leftover:
    path: str  # relative to the cache root
    kind: Kind
    bytes: int
    key: str = ""  # the model whose lock guards it
    repo: str = ""  # the Hub repository whose guard (held exclusively) guards it
    about: str = ""  # for a repository's leftover: the model key(s) it belongs to, for the log (not a guard)

    @property
    def model_key(self) -> str:
        """What the log line names: the model, else the models of its repository, else "-"."""
        return self.key or self.about or "-"

    @property
    def reason(self) -> str:
        return self.kind.value


@dataclass(frozen=True, slots=True)
class Ages:
    """How old a leftover must be before it goes (seconds)."""

    staging: float
    outcomes: float


@dataclass(slots=True)
class Collected:
    removed: list[Leftover] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # what waits for the next round, and why

    @property
    def freed(self) -> int:
        return sum(item.bytes for item in self.removed)


# --- planning -------------------------------------------------------------------------------------------
def plan_collection(layout: CacheLayout, *, use: LiveUse, ages: Ages, now: float) -> list[Leftover]:
    """Every leftover on the volume (changes nothing)."""
    markers = read_markers(layout)
    plan: list[Leftover] = []
    for key in sorted(_keys_with_files(layout)):
        plan += plan_key(layout, key, markers.get(key), use=use, ages=ages, now=now)
    for repo in layout.hub_repos():
        plan += plan_repo(layout, repo, markers=markers, use=use)
    plan += _plan_state(layout, use=use, ages=ages, now=now)
    return plan


def plan_key(
    layout: CacheLayout, key: str, marker: Marker | None, *, use: LiveUse, ages: Ages, now: float
) -> list[Leftover]:
    """The leftovers of one model key (guarded by its lock)."""
    found: list[Leftover] = []
    if marker is None:
        if key in use.keys:
            return []  # a live pod uses a model with no marker (removed by force): nothing of it goes
        traces = [layout.store / key, layout.staging_dir(key), layout.ready_link(key)]
        present = [p for p in traces if p.is_symlink() or p.exists()]
        if present and all(_older(p, ages.staging, now) for p in present):
            found += [_item(layout, p, Kind.UNREADY, key=key) for p in present]
    else:
        base = layout.staging_dir(key)
        found += [
            _item(layout, base / name, Kind.DEAD_ATTEMPT, key=key)
            for name in sorted(list_names(base))
            if _older(base / name, ages.staging, now)
        ]
        found += _old_versions(layout, marker, use)
    for name in sorted(list_names(layout.markers)):
        if name.startswith(f".{key}.json{_TOMBSTONE}"):
            found.append(_item(layout, layout.markers / name, Kind.TOMBSTONE, key=key))
    return found


def _old_versions(layout: CacheLayout, marker: Marker, use: LiveUse) -> list[Leftover]:
    base = layout.store / marker.key
    if use.keeps_every_version_of(marker.key):
        return []
    found = []
    for name in sorted(list_names(base)):
        relative = f"{layout.store.name}/{marker.key}/{name}"
        if relative != marker.path and relative not in use.pinned:
            found.append(_item(layout, base / name, Kind.OLD_VERSION, key=marker.key))
    return found


def plan_repo(
    layout: CacheLayout, repo: HubRepo, *, markers: dict[str, Marker], use: LiveUse, about: str = ""
) -> list[Leftover]:
    """The leftovers of one Hub repository (guarded by its repository guard, held exclusively).

    `about`: the model key the caller removes this for; else the log names the repository's models.
    """
    mine = {key: m for key, m in markers.items() if (r := layout.hub_repo_of(m.path)) is not None and r == repo}
    found = _plan_repo(layout, repo, mine, use)
    about = about or ",".join(sorted(mine))
    return [replace(item, about=about) for item in found]


def _plan_repo(layout: CacheLayout, repo: HubRepo, mine: dict[str, Marker], use: LiveUse) -> list[Leftover]:
    if any(use.keeps_every_version_of(key) for key in mine):
        return []  # a live pod of this repository reads a snapshot nobody recorded: nothing of it goes
    needed: dict[str, set[str]] = {}  # commit -> the file paths some ready marker lists
    for marker in mine.values():
        needed.setdefault(Path(marker.path).name, set()).update(f.path for f in marker.files)
    pinned = {Path(p).name for p in use.pinned if (r := layout.hub_repo_of(p)) is not None and r == repo}
    kept = set(needed) | pinned
    if not kept:
        return [_item(layout, repo.path, Kind.REPOSITORY, repo=repo.folder)]
    found: list[Leftover] = []
    for name in sorted(list_names(repo.snapshots)):
        path = repo.snapshot(name)
        if name.startswith("."):
            found.append(_item(layout, path, Kind.UNFINISHED_SNAPSHOT, repo=repo.folder))
        elif name not in kept:
            found.append(_item(layout, path, Kind.SNAPSHOT, repo=repo.folder))
        elif name not in pinned:
            found += [
                _item(layout, link, Kind.SNAPSHOT_LINK, repo=repo.folder) for link in _extra_links(path, needed[name])
            ]
    gone_links = {item.path for item in found if item.kind is Kind.SNAPSHOT_LINK}
    found += _unkept_refs(layout, repo, kept)
    linked = _linked_blobs(layout, repo, kept, gone_links)
    found += [
        _item(layout, repo.blob(name), Kind.BLOB, repo=repo.folder)
        for name in sorted(list_names(repo.blobs))
        if name not in linked
    ]
    return found


def _extra_links(snapshot: Path, listed: set[str]) -> Iterator[Path]:
    for directory, _, names in os.walk(snapshot):
        for name in names:
            link = Path(directory) / name
            if str(link.relative_to(snapshot)) not in listed:
                yield link


def _unkept_refs(layout: CacheLayout, repo: HubRepo, kept: set[str]) -> list[Leftover]:
    found = []
    for directory, _, names in os.walk(repo.refs):
        for name in sorted(names):
            ref = Path(directory) / name
            try:
                commit = ref.read_text().strip()
            except OSError:
                continue
            if commit not in kept:
                found.append(_item(layout, ref, Kind.REF, repo=repo.folder))
    return found


def _linked_blobs(layout: CacheLayout, repo: HubRepo, kept: set[str], gone_links: set[str]) -> set[str]:
    linked = set()
    for commit in kept:
        for directory, _, names in os.walk(repo.snapshot(commit)):
            for name in names:
                link = Path(directory) / name
                if str(link.relative_to(layout.root)) in gone_links:
                    continue
                with contextlib.suppress(OSError):
                    linked.add(os.path.basename(os.readlink(link)))
    return linked


def _plan_state(layout: CacheLayout, *, use: LiveUse, ages: Ages, now: float) -> list[Leftover]:
    """What the fetchers' own state leaves: trash, takeovers' lock files, old records, temporary files."""
    found = [_item(layout, layout.trash / name, Kind.TRASH) for name in sorted(list_names(layout.trash))]
    for name in sorted(list_names(layout.locks)):
        if ".stale-" in name and _older(layout.locks / name, STALE_LOCK_FILES_AFTER, now):
            about = name.split(".lock.stale-", 1)[0]
            found.append(_item(layout, layout.locks / name, Kind.STALE_LOCK, about=about))
    for name in sorted(list_names(layout.outcomes)):
        path = layout.outcomes / name
        if not name.startswith(".") and _older(path, ages.outcomes, now):
            about = name.removesuffix(".json").removesuffix(".counted").split("-", 2)[-1]  # <time>-<pid>-<key>
            found.append(_item(layout, path, Kind.OUTCOME, about=about))
    for name, pin in read_pins(layout):
        path = layout.pins / name
        if not any(pin.matches(pod) for pod in use.pods) and _older(path, PIN_RECORDS_AFTER, now):
            found.append(_item(layout, path, Kind.STALE_PIN, about=pin.key))
    for directory in (layout.markers, layout.owners, layout.usage, layout.pins, layout.outcomes, layout.ready_dir):
        for name in sorted(list_names(directory)):
            path = directory / name
            if name.startswith(".") and name.endswith(".tmp") and _older(path, ages.staging, now):
                found.append(_item(layout, path, Kind.TEMPORARY))
    return found


def _keys_with_files(layout: CacheLayout) -> set[str]:
    names = set(list_names(layout.staging)) | set(list_names(layout.store)) | set(list_names(layout.ready_dir))
    names |= {n.removesuffix(".json") for n in list_names(layout.markers) if n.endswith(".json")}
    return {n for n in names if not n.startswith(".")}


def _item(layout: CacheLayout, path: Path, kind: Kind, *, key: str = "", repo: str = "", about: str = "") -> Leftover:
    size = 0 if path.is_symlink() else (tree_bytes(path) if path.is_dir() else _size(path))
    return Leftover(str(path.relative_to(layout.root)), kind, size, key=key, repo=repo, about=about)


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _older(path: Path, seconds: float, now: float) -> bool:
    try:
        return now - path.lstat().st_mtime >= seconds
    except OSError:
        return False


# --- execution ------------------------------------------------------------------------------------------
def collect(
    layout: CacheLayout, plan: list[Leftover], *, use: LiveUse, ages: Ages, now: float, identity: Identity
) -> Collected:
    """Remove what `plan` lists and is still garbage under its guard; the rest waits for the next round."""
    result = Collected()
    planned = {item.path for item in plan}
    for key in sorted({item.key for item in plan if item.key}):
        with _model_lock(layout, key, identity) as held:
            if not held:
                result.deferred.append(f"the leftovers of {key} stay until the next round: its lock is held")
                continue
            again = plan_key(layout, key, read_marker(layout, key), use=use, ages=ages, now=now)
            _remove_all(layout, [item for item in again if item.path in planned], result)
    for folder in sorted({item.repo for item in plan if item.repo}):
        result.deferred += collect_repo(layout, HubRepo(layout.hub / folder), use=use, planned=planned, result=result)
    unguarded = [item for item in plan if not item.key and not item.repo]
    again_state = {item.path: item for item in _plan_state(layout, use=use, ages=ages, now=now)}
    _remove_all(layout, [again_state[item.path] for item in unguarded if item.path in again_state], result)
    return result


def collect_repo(
    layout: CacheLayout,
    repo: HubRepo,
    *,
    use: LiveUse,
    planned: set[str] | None,
    result: Collected,
    about: str = "",
) -> list[str]:
    """Remove a repository's leftovers (those in `planned`, or all) under its guard; deferrals."""
    if not repo.path.is_dir():
        return []
    guard = RepoGuard(layout, repo.folder)
    if not guard.try_exclusive():
        return [
            f"the leftovers of {repo.folder} stay until the next round: a download of the same repository is "
            "under way (or this filesystem has no record locks)"
        ]
    try:
        markers = read_markers(layout)
        again = plan_repo(layout, repo, markers=markers, use=use, about=about)
        _remove_all(layout, [item for item in again if planned is None or item.path in planned], result)
        _restore_refs(layout, repo, markers)
    finally:
        guard.release()
    return []


def _restore_refs(layout: CacheLayout, repo: HubRepo, markers: dict[str, Marker]) -> None:
    """A branch or tag a ready model of the repository was fetched by must still resolve offline."""
    for marker in markers.values():
        if layout.hub_repo_of(marker.path) != repo:
            continue
        with contextlib.suppress(ContractError):
            source = parse_source(marker.source)
            ref = repo.ref(source.revision) if isinstance(source, HubSource) and not source.pinned else None
            if ref is not None and not ref.exists():
                make_shared_dir(ref.parent)
                write_atomically(ref, marker.version.encode())


def _remove_all(layout: CacheLayout, items: list[Leftover], result: Collected) -> None:
    for item in items:
        if discard(layout, layout.root / item.path, key=item.model_key):
            result.removed.append(item)
            log.info(
                "removed %s: %s (%s)",
                item.path,
                item.reason,
                format_bytes(item.bytes),
                extra={"model_key": item.model_key},
            )


@contextlib.contextmanager
def _model_lock(layout: CacheLayout, key: str, identity: Identity) -> Iterator[bool]:
    """The model's lock, taken without waiting: yields whether we hold it (then nobody downloads it)."""
    lock = ModelLock(layout, key, identity=identity, settings=LockSettings())
    try:
        yield lock.try_acquire(purpose="purge: leftovers") is LockState.HELD
    finally:
        lock.release()


def discard(layout: CacheLayout, path: Path, *, key: str = "-") -> bool:
    """Remove a file, a link or a tree; a tree is moved to the trash first, so it vanishes at once.

    Never deletes a tree in place: a half-deleted published tree could be taken as whole. False when
    `path` is already gone or cannot be moved (logged).
    """
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
            return True
    except FileNotFoundError:
        return False
    except OSError as err:
        log.warning(
            "could not remove %s (%s); it stays",
            path.relative_to(layout.root),
            err.strerror or err,
            extra={"model_key": key},
        )
        return False
    make_shared_dir(layout.trash)
    target = layout.trash / f"{path.name}.{uuid.uuid4().hex[:12]}"
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return False
    except OSError as err:
        log.warning(
            "could not remove %s (%s); it stays",
            path.relative_to(layout.root),
            err.strerror or err,
            extra={"model_key": key},
        )
        return False
    shutil.rmtree(target, ignore_errors=True)
    return True


def describe_ages(ages: Ages) -> str:
    return f"attempts after {format_duration(ages.staging)}, records after {format_duration(ages.outcomes)}"
