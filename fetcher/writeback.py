"""Start writing downloaded bytes to the disk while the download goes on, so the fsync at the end is short.

A fetcher makes every file durable (fsync) before it publishes the model: a model that a crash could
leave half on the disk must never be marked ready. Left to the kernel, a fast download fills the page
cache and its writeback starts late, and the final fsync then waits for most of the file: on this
project's machines half of a cold copy's wall (docs/benchmarks.md). So every WINDOW bytes written, the
range just written is handed to the disk at once with sync_file_range(SYNC_FILE_RANGE_WRITE), which
starts the writeback and returns without waiting for it. Durability still comes from the fsync alone;
where the call is missing (not glibc, not Linux) or fails, nothing changes but the timing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

WINDOW = 16 << 20  # bytes: how much a stream writes before it hands them to the disk
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of the range's dirty pages, do not wait


class Writeback:
    """One stream's writes to one descriptor, from `start` onwards, in order."""

    def __init__(self, fd: int, start: int) -> None:
        self.fd, self.start = fd, start

    def wrote(self, end: int) -> None:
        """The stream has written up to byte `end` (exclusive)."""
        if end - self.start >= WINDOW:
            start_writeback(self.fd, self.start, end - self.start)
            self.start = end


def start_writeback(fd: int, offset: int, count: int) -> None:
    call = _sync_file_range()
    if call is not None:
        call(fd, offset, count, _SYNC_FILE_RANGE_WRITE)  # a failure costs only time: the fsync decides


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function
