"""Who holds a model's lock: the owner record, its heartbeat, and the progress it reports.

The holder writes ``.modelcache/owners/<key>.json`` when it takes the lock and then every heartbeat;
waiters log it ("held by pod ns/x on node n: 1.2 GiB of 3.4 GiB") and judge the heartbeat on their own
clock; ``modelcache ls`` shows it. Every field is read defensively: any pod that mounts the volume
read-write can write one.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import asdict, dataclass

from modelcache.cache.files import write_atomically
from modelcache.cache.layout import CacheLayout

UNKNOWN_HOLDER = "an unknown holder (no owner record yet)"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who we are, for the owner record."""

    pod: str
    namespace: str
    node: str
    host: str
    pid: int

    @classmethod
    def here(cls, *, pod: str, namespace: str, node: str) -> Identity:
        import socket  # off the cache-hit path, which never takes a lock

        host = socket.gethostname()
        return cls(pod=pod or host, namespace=namespace, node=node or "unknown", host=host, pid=os.getpid())


class Progress:
    """Bytes done out of bytes total, updated by download threads, read by the heartbeat."""

    def __init__(self, total: int = 0) -> None:
        self._lock = threading.Lock()
        self.total = total
        self.done = 0

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.done, self.total


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """The lock holder: who, doing what (a staging attempt, or "purge", "rm"), since when, how far."""

    pod: str
    namespace: str
    node: str
    pid: int | str
    key: str = ""
    source: str = ""
    attempt: str = ""
    started_at: float = 0.0
    heartbeat_at: float = 0.0  # the holder's wall clock: shown, never compared with ours
    bytes_done: int = 0
    bytes_total: int = 0
    lock: str | None = None
    host: str = ""
    include: tuple[str, ...] = ()  # the source's include patterns: with the source, what the key stands for

    @property
    def holder(self) -> str:
        return f"pod {self.namespace or '?'}/{self.pod or '?'} on node {self.node or '?'} (pid {self.pid})"

    @property
    def percent(self) -> int | None:
        return self.bytes_done * 100 // self.bytes_total if self.bytes_total else None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> OwnerRecord | None:
        """The record, or None when it is not one (empty, torn, or not ours)."""
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        return cls(
            pod=str(data.get("pod") or ""),
            namespace=str(data.get("namespace") or ""),
            node=str(data.get("node") or ""),
            pid=str(data.get("pid", "?")),
            key=str(data.get("key") or ""),
            source=str(data.get("source") or ""),
            attempt=str(data.get("attempt") or ""),
            started_at=_number(data.get("started_at")),
            heartbeat_at=_number(data.get("heartbeat_at")),
            bytes_done=int(_number(data.get("bytes_done"))),
            bytes_total=int(_number(data.get("bytes_total"))),
            lock=str(data["lock"]) if data.get("lock") else None,
            host=str(data.get("host") or ""),
            include=patterns(data.get("include")),
        )


def read_owner(layout: CacheLayout, key: str) -> OwnerRecord | None:
    try:
        raw = layout.owner_path(key).read_bytes()
    except OSError:
        return None
    return OwnerRecord.from_json(raw)


def write_owner(layout: CacheLayout, key: str, record: OwnerRecord) -> None:
    write_atomically(layout.owner_path(key), record.to_json())


def describe_holder(owner: OwnerRecord | None) -> str:
    return owner.holder if owner is not None else UNKNOWN_HOLDER


def patterns(value: object) -> tuple[str, ...]:
    """Include patterns read back from a record: a list of strings, anything else is none."""
    if not isinstance(value, list | tuple):
        return ()
    return tuple(str(item) for item in value if isinstance(item, str))


def _number(value: object) -> float:
    try:
        number = float(str(value))
    except ValueError:
        return 0.0
    return number if math.isfinite(number) else 0.0
