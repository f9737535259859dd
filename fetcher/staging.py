"""Private staging attempts: where a download writes before anything is published.

``.modelcache/staging/<key>/<version>.<id>/data/<path>`` holds verified files under their final names and
partial ones as ``<path>.part``. An attempt whose fetcher died is adopted by the next one (a rename, so
one claimant wins) and its partial files are resumed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from modelcache.cache.files import make_shared_dir, tree_bytes
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import ModelFile
from modelcache.contract.quantities import format_bytes

log = logging.getLogger(__name__)
PART_SUFFIX = ".part"


def staged_path(attempt_dir: Path, file: ModelFile) -> Path:
    """Where a verified file waits for publication."""
    return attempt_dir / "data" / file.path


def part_path(attempt_dir: Path, file: ModelFile) -> Path:
    """Where a file is written while it downloads."""
    final = staged_path(attempt_dir, file)
    return final.with_name(final.name + PART_SUFFIX)


def staged_bytes(attempt_dir: Path, file: ModelFile) -> int:
    """Bytes of `file` already on disk in the attempt, verified or partial (a ranged part file is sized in
    full at once but sparse: what its blocks hold counts)."""
    for candidate in (staged_path(attempt_dir, file), part_path(attempt_dir, file)):
        with contextlib.suppress(OSError):
            stat = candidate.stat()
            return min(stat.st_size, stat.st_blocks * 512, file.size)
    return 0


def claim_attempt(layout: CacheLayout, key: str, version: str, *, exclusive: bool, stale_after: float) -> Path:
    """A private staging directory; a dead attempt at the same version is adopted, to resume it.

    `exclusive`: we hold the model's lock, so every other attempt of this key is dead; without it, only
    attempts with no progress for `stale_after` seconds are.
    """
    base = layout.staging_dir(key)
    make_shared_dir(base)
    mine = base / f"{version}.{uuid.uuid4().hex[:12]}"
    now = time.time()
    candidates = []
    for entry in base.iterdir():
        # Attempts at the same version, of any UID: the directories are 0777, verified files are renamed
        # as they are, and a partial file of another UID is copied into one of ours (fetcher.transfer).
        if entry.name.startswith(version + ".") and entry.is_dir():
            with contextlib.suppress(OSError):
                stat = entry.stat()
                if exclusive or now - stat.st_mtime > stale_after:
                    candidates.append((tree_bytes(entry), entry))
    for size, entry in sorted(candidates, reverse=True):
        try:
            os.rename(entry, mine)  # atomic: one claimant wins
        except OSError:
            continue
        log.info("resuming the interrupted download %s (%s already on disk)", entry.name, format_bytes(size))
        return mine
    make_shared_dir(mine)  # 0777: the purge may run under another UID (files.SHARED_DIR_MODE)
    return mine


def remove_attempt(attempt_dir: Path) -> None:
    shutil.rmtree(attempt_dir, ignore_errors=True)


def remove_dead_attempts(layout: CacheLayout, key: str) -> None:
    """Every other attempt of the key (call it only while holding the model's lock)."""
    for entry in layout.staging_dir(key).iterdir():
        shutil.rmtree(entry, ignore_errors=True)
