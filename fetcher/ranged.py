"""Parallel ranged requests inside one large file: several streams write its chunks at their offsets.

A large file behind a per-connection cap (CDNs and object stores cap single streams well below the
link) is fetched over as many connections as the fetcher has download slots. Memory stays bounded:
each stream writes what it reads straight to disk at its offset (``os.pwrite``), a read at a time.

- **Chunks.** The file is cut in chunks of ``chunk`` bytes (32 to 256 MiB, by the file's size and the
  number of streams; ``MODELCACHE_RANGE_CHUNK`` sets it, 0 turns ranges off). Each is one request
  ``Range: bytes=A-B``, retried from where it stopped with the fetcher's retry policy.
- **Resume.** A chunk map beside the attempt (``chunks/<hash of the path>.json``) lists the chunks whose
  bytes are on disk and fsynced; it is written before the part file is sized, so after a SIGKILL the
  next fetcher keeps exactly those and fetches the others again.
- **Verification.** A hashing thread reads the chunks back in file order as they complete (from the
  page cache: they were just written), so the sha256 (or git blob sha1) of every byte is known when the
  last chunk lands, and checked before the file gets its staged name.
- **A server that ignores Range** (a 200, a range that starts elsewhere, more bytes than asked) makes
  the whole file go back to one stream, as before: :class:`RangesIgnoredError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from fetcher.plan import RemoteFile
from fetcher.retrying import CancelledError, RetryableError, RetryPolicy, retry
from fetcher.sources import Source
from fetcher.writeback import Writeback
from modelcache.cache.digests import HASH_CHUNK, Digests
from modelcache.cache.files import FILE_MODE, make_shared_dir, write_atomically
from modelcache.contract.errors import IntegrityError
from modelcache.contract.quantities import format_bytes

if TYPE_CHECKING:
    from fetcher.transfer import Tally

log = logging.getLogger(__name__)
MIN_CHUNK = 32 << 20
MAX_CHUNK = 256 << 20
_MIB = 1 << 20


class RangesIgnoredError(Exception):
    """The source answered a ranged request with something else: download the file in one stream."""


def chunk_size(size: int, streams: int, setting: int | None) -> int:
    """Bytes per ranged request for a file of `size`, or 0 for one stream (small file, one slot, ranges off)."""
    if setting is not None:
        return setting if 0 < setting < size else 0
    if streams < 2 or size < 2 * MIN_CHUNK:
        return 0
    per = min(MAX_CHUNK, max(MIN_CHUNK, -(-size // (streams * 2))))  # 2 chunks a stream: the last ones even out
    return -(-per // _MIB) * _MIB


class ChunkMap:
    """Which chunks of a file are on disk and fsynced, kept on the volume for the next attempt."""

    def __init__(self, attempt_dir: Path, file: RemoteFile, chunk: int) -> None:
        name = hashlib.sha256(file.path.encode()).hexdigest()[:32]
        self.path = attempt_dir / "chunks" / f"{name}.json"
        self.file, self.chunk = file, chunk
        self.count = -(-file.size // chunk)
        self.done: set[int] = set()
        self.changed = threading.Condition()

    def bounds(self, index: int) -> tuple[int, int]:
        """First and last byte of a chunk."""
        start = index * self.chunk
        return start, min(self.file.size, start + self.chunk) - 1

    def length(self, index: int) -> int:
        first, last = self.bounds(index)
        return last - first + 1

    def load(self) -> bool:
        """The map an interrupted attempt left, if it is for this file cut the same way."""
        try:
            document = json.loads(self.path.read_bytes())
            if (document["path"], document["size"], document["chunk"]) != (self.file.path, self.file.size, self.chunk):
                return False
            self.done = {int(i) for i in document["done"] if 0 <= int(i) < self.count}
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return True

    def save(self) -> None:
        make_shared_dir(self.path.parent)
        document = {"path": self.file.path, "size": self.file.size, "chunk": self.chunk, "done": sorted(self.done)}
        write_atomically(self.path, json.dumps(document).encode())

    def mark(self, index: int) -> None:
        with self.changed:
            self.done.add(index)
            self.save()
            self.changed.notify_all()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class _InOrderHasher(threading.Thread):
    """Hashes the part file chunk by chunk, in order, as the chunks are marked done."""

    def __init__(self, part: Path, chunks: ChunkMap, stop: threading.Event) -> None:
        super().__init__(name="modelcache-hash", daemon=True)
        self.part, self.chunks, self.stop = part, chunks, stop
        self.digests = Digests(chunks.file)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open(self.part, "rb") as source:
                for index in range(self.chunks.count):
                    with self.chunks.changed:
                        while index not in self.chunks.done and not self.stop.is_set():
                            self.chunks.changed.wait(0.5)
                    if self.stop.is_set():
                        return
                    first, last = self.chunks.bounds(index)
                    source.seek(first)
                    left = last - first + 1
                    while left:
                        data = source.read(min(HASH_CHUNK, left))
                        if not data:
                            raise IntegrityError(f"{self.chunks.file.path}: the staged file is shorter than marked")
                        self.digests.update(data)
                        left -= len(data)
        except BaseException as err:  # noqa: BLE001 (handed to the downloading thread, which raises it)
            self.error = err


def download(
    source: Source,
    file: RemoteFile,
    part: Path,
    attempt_dir: Path,
    *,
    chunk: int,
    streams: int,
    slots: AbstractContextManager[object],
    tally: Tally,
    retry_policy: RetryPolicy,
    cancel: threading.Event,
) -> None:
    """Fetch `file` into `part` over up to `streams` ranged requests at once, and verify every byte.

    Raises RangesIgnoredError, once no stream writes any more and nothing of the file is counted, when
    the source does not serve ranges.
    """
    chunks = ChunkMap(attempt_dir, file, chunk)
    resumed = _prepare(part, chunks)
    counted = [resumed]  # bytes of this file in the tally
    tally.add_resumed(resumed)
    if chunks.done:
        log.info("%s: resuming %d of %d chunks already on disk", file.path, len(chunks.done), chunks.count)
    halt = threading.Event()  # this file's streams stop: a failure, a refusal of ranges, or `cancel`
    hasher = _InOrderHasher(part, chunks, halt)
    hasher.start()
    lock = threading.Lock()

    def count(size: int) -> None:
        with lock:
            counted[0] += size
        tally.add_fetched(size)

    def fetch(index: int) -> None:
        with slots:
            _fetch_chunk(source, file, part, chunks, index, count=count, retry_policy=retry_policy, halt=halt)

    pending = [i for i in range(chunks.count) if i not in chunks.done]
    try:
        _fetch_all(fetch, pending, streams=streams, cancel=cancel, halt=halt)
    except RangesIgnoredError:
        hasher.join()
        tally.discard(resumed=resumed, counted=counted[0])
        chunks.remove()
        raise
    hasher.join()
    if hasher.error is not None:
        raise hasher.error
    problem = hasher.digests.mismatch()
    chunks.remove()
    if problem:
        part.unlink(missing_ok=True)  # a bad download must not be resumed
        raise IntegrityError(
            f"{file.path} failed verification: {problem}. Nothing was published. The pod will download it "
            "again; if this repeats, the source serves corrupt data or declares a wrong digest."
        )


def _fetch_all(
    fetch: Callable[[int], None], pending: list[int], *, streams: int, cancel: threading.Event, halt: threading.Event
) -> None:
    """Every pending chunk, `streams` at a time; returns once no stream of this file runs any more, but
    for a final error, which leaves the streams to stop at their next read (the process is failing)."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(streams, len(pending))), thread_name_prefix="modelcache-range")
    futures = [pool.submit(fetch, index) for index in pending]
    try:
        _wait_all(futures, cancel, halt)
    except RangesIgnoredError:
        pool.shutdown(wait=True, cancel_futures=True)  # no stream may write once one stream takes over
        raise
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _prepare(part: Path, chunks: ChunkMap) -> int:
    """Size the part file for chunks at their offsets, keeping what an earlier attempt verified; bytes kept."""
    file = chunks.file
    try:
        found: os.stat_result | None = part.stat()
    except FileNotFoundError:
        found = None
    mine = found is not None and found.st_uid == os.geteuid()
    if found is not None and found.st_size == file.size and chunks.load():
        if not mine:  # a dead holder of another UID: its 0644 file is not ours to write into
            _adopt(part, chunks)
            chunks.save()
        return sum(chunks.length(i) for i in chunks.done)
    prefix = found.st_size if found is not None and mine and not chunks.path.exists() else 0  # one stream's prefix
    chunks.done = {i for i in range(chunks.count) if chunks.bounds(i)[1] < min(prefix, file.size)}
    chunks.save()  # before the file is sized: a sized file without a map is never taken for a prefix
    if not mine:
        part.unlink(missing_ok=True)  # another UID's file: ours replaces it (the directory is 0777)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.ftruncate(fd, file.size)  # sparse: the blocks are written by the chunks
    finally:
        os.close(fd)
    if chunks.done:
        log.info("%s: keeping the %s one stream had written", file.path, format_bytes(prefix))
    return sum(chunks.length(i) for i in chunks.done)


def _adopt(part: Path, chunks: ChunkMap) -> None:
    """Copy the finished chunks of another UID's part file into one of ours in its place."""
    mine = part.with_name(f".{part.name}.{os.getpid()}.adopt")
    with part.open("rb") as theirs, open(mine, "wb") as ours:
        os.fchmod(ours.fileno(), FILE_MODE)
        ours.truncate(chunks.file.size)
        for index in sorted(chunks.done):
            first, last = chunks.bounds(index)
            theirs.seek(first)
            ours.seek(first)
            left = last - first + 1
            while left and (data := theirs.read(min(HASH_CHUNK, left))):
                ours.write(data)
                left -= len(data)
            if left:  # shorter than its map says: fetch that chunk again
                chunks.done.discard(index)
        ours.flush()
        os.fsync(ours.fileno())
    os.replace(mine, part)  # the directory is 0777: any UID may replace an entry in it
    log.info("%s: copied the %d finished chunks of another UID's download", chunks.file.path, len(chunks.done))


def _fetch_chunk(
    source: Source,
    file: RemoteFile,
    part: Path,
    chunks: ChunkMap,
    index: int,
    *,
    count: Callable[[int], None],
    retry_policy: RetryPolicy,
    halt: threading.Event,
) -> None:
    first, last = chunks.bounds(index)
    written = [0]

    def attempt() -> None:
        position = first + written[0]
        served, data = source.open(file, position, last)
        try:
            if served != position:
                raise RangesIgnoredError(f"asked for bytes {position}-{last}, the source sent from {served}")
            _write_chunk(data, part, position, last, count=count, halt=halt, written=written)
        finally:
            getattr(data, "close", lambda: None)()  # its connection is closed now, not when collected

    retry(
        attempt,
        policy=retry_policy,
        what=f"downloading bytes {first}-{last} of {file.path}",
        advice="The pod will retry; if the source keeps failing, check its status and the network path from this node.",
        cancel=halt,
        progress=lambda: f"from byte {first + written[0]}",
    )
    chunks.mark(index)


def _write_chunk(
    data: Iterator[bytes],
    part: Path,
    position: int,
    last: int,
    *,
    count: Callable[[int], None],
    halt: threading.Event,
    written: list[int],
) -> None:
    """Write a response's bytes at their offsets, up to byte `last` of the file, then fsync them."""
    fd = os.open(part, os.O_WRONLY)
    writeback = Writeback(fd, position)
    try:
        for block in data:
            if halt.is_set():
                raise CancelledError
            if position + len(block) > last + 1:
                raise RangesIgnoredError(f"asked for bytes up to {last}, the source sent more")
            view = memoryview(block)
            while view:
                done = os.pwrite(fd, view, position)
                view, position = view[done:], position + done
                written[0] += done
                count(done)
            writeback.wrote(position)
        if position <= last:
            raise RetryableError(f"the connection ended at byte {position}, before byte {last}")
        os.fsync(fd)
    finally:
        os.close(fd)


def _wait_all(futures: list[Future[None]], cancel: threading.Event, halt: threading.Event) -> None:
    """Until every chunk is done. The first failure stops the file's other streams and is raised (a refusal
    of ranges before any other); `cancel` (another file failed, or SIGTERM) stops them too."""
    while True:
        done, pending = wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION)
        errors = [error for f in done if (error := f.exception()) is not None]
        if errors or cancel.is_set():
            halt.set()
            refused = next((e for e in errors if isinstance(e, RangesIgnoredError)), None)
            if refused is not None:
                raise refused
            raise next((e for e in errors if not isinstance(e, CancelledError)), None) or CancelledError()
        if not pending:
            return
