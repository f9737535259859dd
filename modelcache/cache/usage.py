"""When a model was last used: the modification time of its usage file, touched before every ready check.

The order matters to the purge: a fetcher records the use *before* it looks for the marker, and the
removal moves the marker aside *before* it reads the usage time again, so either the removal sees the
use or the fetcher sees no marker (modelcache.cache.removal).
"""

from __future__ import annotations

import os
import time

from modelcache.cache.files import FILE_MODE, write_atomically
from modelcache.cache.layout import CacheLayout


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
