"""What is in a cache directory: every model key with its state, size, last use and download, and verify.

Read-only and standard library only: `modelcache ls`, `verify`, the purger and the cache agent's
metrics share it. A key is found through any trace it leaves (marker, owner record, staging attempt,
store directory, ready link), so an interrupted download shows up as well as a ready model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from modelcache.cache.digests import hash_file
from modelcache.cache.files import list_names, tree_bytes
from modelcache.cache.layout import CacheLayout
from modelcache.cache.locking import lock_is_held
from modelcache.cache.markers import Marker, ModelFile, find_problem, read_marker
from modelcache.cache.outcomes import OutcomeRecord, read_outcomes
from modelcache.cache.owners import UNKNOWN_HOLDER, read_owner
from modelcache.cache.usage import last_used

State = Literal["ready", "downloading", "interrupted", "corrupt"]


@dataclass(frozen=True, slots=True)
class Download:
    """The lock holder's owner record: who, doing what, how far."""

    holder: str  # pod namespace/name on node N (pid P)
    activity: str  # a staging attempt's name, or what an admin command is doing ("purge", "rm")
    bytes_done: int
    bytes_total: int
    heartbeat_at: float  # the holder's wall clock

    @property
    def percent(self) -> int | None:
        return self.bytes_done * 100 // self.bytes_total if self.bytes_total else None


@dataclass(frozen=True, slots=True)
class CacheEntry:
    key: str
    state: State
    source: str = ""  # "" when only an interrupted attempt is left and nothing names the source
    include: tuple[str, ...] = ()  # the source's include patterns (with the source: what the key stands for)
    version: str = ""
    path: str = ""
    files: int = 0
    size: int = 0  # bytes of the ready model (files shared with another key of the repo count for both)
    staging_bytes: int = 0  # bytes of unfinished attempts under .modelcache/staging/<key>
    published_at: float | None = None
    last_used: float | None = None
    locked: bool | None = None  # None: this filesystem cannot tell
    download: Download | None = None
    problem: str = ""  # why a model is corrupt or interrupted
    last_outcome: OutcomeRecord | None = None

    @property
    def idle_since(self) -> float | None:
        """When it was last needed: its last use, else its publication (a model never used since)."""
        return self.last_used if self.last_used is not None else self.published_at


def list_models(layout: CacheLayout) -> list[CacheEntry]:
    """Every key in the cache, sorted by key."""
    outcomes: dict[str, OutcomeRecord] = {}
    for _, record in read_outcomes(layout):
        outcomes[record.key] = record  # oldest first: the newest wins
    return [describe(layout, key, last_outcome=outcomes.get(key)) for key in sorted(model_keys(layout))]


def failed_before_any_file(layout: CacheLayout, known: set[str]) -> list[CacheEntry]:
    """Models whose newest outcome is a failure and that left no other trace (refused at the source,
    say): `list_models` cannot see them, the CachedModel objects must (phase Failed, with the message)."""
    newest: dict[str, OutcomeRecord] = {}
    for _, record in read_outcomes(layout):
        newest[record.key] = record
    return [
        CacheEntry(
            key,
            "interrupted",
            source=record.source,
            include=record.include,
            last_outcome=record,
            problem="the fetch failed before any file arrived",
        )
        for key, record in sorted(newest.items())
        if record.kind == "failed" and key not in known and record.source
    ]


def describe(layout: CacheLayout, key: str, *, last_outcome: OutcomeRecord | None = None) -> CacheEntry:
    """The state of one key, read from its traces on the volume."""
    marker = read_marker(layout, key)
    locked = lock_is_held(layout, key)
    base = CacheEntry(
        key,
        "interrupted",
        download=current_download(layout, key) if locked else None,
        staging_bytes=tree_bytes(layout.staging_dir(key)),
        last_used=last_used(layout, key),
        locked=locked,
        last_outcome=last_outcome,
    )
    if marker is not None:
        problem = find_problem(layout, marker) or ""
        state: State = "corrupt" if problem else "ready"
        if problem and base.download is not None:
            state = "downloading"
        return replace(
            base,
            state=state,
            source=marker.source,
            include=marker.include,
            version=marker.version,
            path=marker.path,
            files=len(marker.files),
            size=marker.total_bytes,
            published_at=marker.published_at,
            problem=problem,
        )
    owner = read_owner(layout, key)
    if owner is not None and owner.source:
        source, include = owner.source, owner.include
    else:
        source, include = (last_outcome.source, last_outcome.include) if last_outcome else ("", ())
    if base.download is not None:
        return replace(base, state="downloading", source=source, include=include)
    problem = "no ready marker: a download or a removal stopped before it finished"
    return replace(base, source=source, include=include, problem=problem)


@dataclass(frozen=True, slots=True)
class Damage:
    """One problem `verify` found: a file (relative to the model directory; "" for the whole model)."""

    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}" if self.file else self.problem


def verify_model(layout: CacheLayout, marker: Marker, *, progress: Callable[[int], None] | None = None) -> list[Damage]:
    """Re-hash every file against the marker's digests; the problems found (empty: intact).

    Hub files carry a sha256 (LFS) or a git blob sha1 (small files); S3 and HTTPS files carry a sha256
    when the source declared one, else only their size is checked.
    """
    problems: list[Damage] = []
    model_dir = layout.root / marker.path
    for item in marker.files:
        problem = _verify_file(model_dir / item.path, item, progress)
        if problem:
            problems.append(Damage(item.path, problem))
    link_problem = find_problem(layout, marker)
    if link_problem is not None and not problems:
        problems.append(Damage("", link_problem))
    return problems


def _verify_file(path: Path, item: ModelFile, progress: Callable[[int], None] | None) -> str:
    try:
        problem = hash_file(path, item, progress=progress).mismatch()
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    return problem or ""


def free_space(layout: CacheLayout) -> tuple[int, int]:
    """(free bytes for unprivileged writers, total bytes) of the cache volume."""
    stats = os.statvfs(layout.root)
    return stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize


def model_keys(layout: CacheLayout) -> set[str]:
    """Every key that left a trace: marker, owner record, staging attempt, store directory or ready link."""
    keys: set[str] = set()
    for directory, suffix in ((layout.markers, ".json"), (layout.owners, ".json")):
        keys.update(n[: -len(suffix)] for n in list_names(directory) if n.endswith(suffix) and not n.startswith("."))
    for directory in (layout.staging, layout.store, layout.ready_dir):
        keys.update(n for n in list_names(directory) if not n.startswith("."))
    return keys


def current_download(layout: CacheLayout, key: str) -> Download:
    """What the lock holder's owner record says (call it when the lock is held)."""
    owner = read_owner(layout, key)
    if owner is None:
        return Download(UNKNOWN_HOLDER, "", 0, 0, 0.0)
    return Download(owner.holder, owner.attempt, owner.bytes_done, owner.bytes_total, owner.heartbeat_at)
