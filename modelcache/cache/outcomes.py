"""Fetch outcomes as small records on the cache volume, so they are visible without reading logs.

Every fetcher run on the shared cache leaves one JSON record under ``.modelcache/outcomes/``: a hit,
a download (bytes, seconds), a wait for another pod's download, or a failure with its reason. The
cache agent (``modelcache agent``) turns them into Prometheus counters and histograms: it claims a
record by renaming ``.json`` to ``.counted`` (atomic, so two agents on one volume never count it
twice), then keeps only the newest counted record per model. ``modelcache ls`` shows that one.

A record is a statistic, not state: it is written without fsync, under a dot name and renamed, so a
reader sees a whole record or none. A fetcher that cannot write one only logs a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from modelcache.cache.files import FILE_MODE, SHARED_DIR_MODE
from modelcache.cache.layout import CacheLayout

log = logging.getLogger(__name__)
KINDS = ("hit", "waited", "downloaded", "failed")
MAX_RECORD_BYTES = 16384  # records are a few hundred bytes; anything larger is not ours
MAX_MESSAGE_CHARS = 1024
NEW_SUFFIX = ".json"
COUNTED_SUFFIX = ".counted"


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    kind: str  # one of KINDS
    key: str
    source: str
    at: float  # wall-clock time the fetcher finished
    version: str = ""
    bytes_downloaded: int = 0  # fetched from the source by this run
    bytes_resumed: int = 0  # already staged by an earlier attempt: not fetched again
    seconds: float = 0.0
    waited_seconds: float = 0.0
    reason: str = ""  # for failures: the FetchError reason (NotFound, DiskFull, ...)
    message: str = ""
    pod: str = ""
    namespace: str = ""
    node: str = ""
    include: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, raw: bytes) -> OutcomeRecord:
        from modelcache.cache.owners import patterns

        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("kind") not in KINDS:
            raise ValueError("not an outcome record")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known | {"include": patterns(data.get("include"))})


def write_outcome(layout: CacheLayout, record: OutcomeRecord) -> None:
    """Best effort: a statistic must never fail a pod start."""
    directory = layout.outcomes
    name = f"{time.time_ns()}-{os.getpid()}-{record.key}.json"
    tmp = directory / f".{name}.tmp"
    data = asdict(record)
    data["message"] = record.message[:MAX_MESSAGE_CHARS]
    try:
        if not directory.is_dir():  # a cache set up by an older fetcher; .modelcache/ itself must exist
            directory.mkdir(mode=SHARED_DIR_MODE)
            with contextlib.suppress(PermissionError):
                directory.chmod(SHARED_DIR_MODE)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            os.write(fd, json.dumps(data).encode())
        finally:
            os.close(fd)
        os.rename(tmp, directory / name)
    except OSError as err:
        log.warning("could not record the outcome on the cache volume (%s); the termination message has it", err)
        with contextlib.suppress(OSError):
            tmp.unlink()


def read_outcomes(layout: CacheLayout, *, counted: bool = True) -> Iterator[tuple[Path, OutcomeRecord]]:
    """Every whole record, oldest first (names start with the time in ns); `counted=False`: only those no
    agent has claimed yet. Unreadable files are skipped (and left for the purger)."""
    suffixes = (NEW_SUFFIX, COUNTED_SUFFIX) if counted else (NEW_SUFFIX,)
    try:
        names = sorted(n for n in os.listdir(layout.outcomes) if n.endswith(suffixes) and not n.startswith("."))
    except FileNotFoundError:
        return
    for name in names:
        path = layout.outcomes / name
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_RECORD_BYTES + 1)
            if len(raw) > MAX_RECORD_BYTES:
                continue
            yield path, OutcomeRecord.from_json(raw)
        except (OSError, ValueError, TypeError):
            continue


def claim_outcome(path: Path) -> Path | None:
    """Mark a new record counted; None when another agent claimed it first (or it is gone)."""
    claimed = path.with_name(path.name.removesuffix(NEW_SUFFIX) + COUNTED_SUFFIX)
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return None
    return claimed
