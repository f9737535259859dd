"""What a fetcher records on every pod start: when the model was used (its usage file's modification time,
touched before every ready check), and which version the pod reads (its pin record).

The order matters to the purge: a fetcher records the use *before* it looks for the marker, and the
removal moves the marker aside *before* it reads the usage time again, so either the removal sees the
use or the fetcher sees no marker (modelcache.cache.removal).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time

from modelcache.cache.files import FILE_MODE, write_atomically
from modelcache.cache.layout import CacheLayout

log = logging.getLogger(__name__)


def usage_stamp(layout: CacheLayout, key: str) -> tuple[int, int, int] | None:
    """The usage file's identity and times (inode, mtime, ctime in ns), or None when there is none.

    Read through open() + fstat(), not stat(): NFS revalidates attributes on open (close-to-open
    consistency), while a plain stat() may answer from a cache seconds old.
    """
    try:
        fd = os.open(layout.usage_path(key), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    return info.st_ino, info.st_mtime_ns, info.st_ctime_ns


def record_use(layout: CacheLayout, key: str) -> None:
    """Mark the model as used now (its usage file's mtime), for purging unused models."""
    path = layout.usage_path(key)
    now = time.time()
    try:
        os.utime(path, (now, now))
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            return
        except FileNotFoundError:
            return  # a cache no fetcher has set up yet: there is nothing to use
        os.close(fd)
    except PermissionError:
        # Another UID made it; a touch needs ownership. Replace it by a file of ours (atomic).
        write_atomically(path, b"")


def last_used(layout: CacheLayout, key: str) -> float | None:
    """When the model was last used (Unix time), or None when it never was."""
    try:
        return layout.usage_path(key).stat().st_mtime
    except OSError:
        return None


def pin_record_name(namespace: str, pod: str) -> str:
    """The record's file name: a hash, so no pod name (which the pod spec sets) reaches a path."""
    return hashlib.sha256(f"{namespace}/{pod}".encode()).hexdigest()[:32] + ".json"


def record_pin(layout: CacheLayout, *, namespace: str, pod: str, uid: str, key: str, model_dir: str) -> None:
    """Record the version a pod reads. Best effort: without a record, the pod's model keeps every version."""
    if not namespace or not pod:
        return
    record = {"namespace": namespace, "pod": pod, "uid": uid, "key": key, "path": model_dir, "at": time.time()}
    try:
        if not layout.pins.is_dir():
            return  # a volume set up by an older fetcher; the next download creates it
        path = layout.pins / pin_record_name(namespace, pod)  # modelcache.cache.pins reads these fields
        write_atomically(path, json.dumps(record).encode(), durable=False)
    except OSError as err:
        log.warning(
            "could not record the pin of %s/%s (%s); its model keeps every version",
            namespace,
            pod,
            err,
            extra={"model_key": key},
        )
