"""Downloading a plan's files into a private staging directory: in parallel, streamed, verified.

Memory is bounded by workers x chunk size whatever the model's size: bytes go straight to disk, and
sha256 (and, for small Hub files, the git blob sha1) is computed while they stream. A large file is
fetched over several ranged requests at once (fetcher.ranged). A partial file
left by a killed fetcher is resumed with a Range request after its bytes are hashed again, so a crash
costs only the bytes not yet written. A file is renamed to its staged name only once verified.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fetcher import ranged
from fetcher.plan import RemoteFile
from fetcher.retrying import CancelledError, RetryableError, RetryPolicy, retry
from fetcher.sources import Source
from fetcher.staging import part_path, staged_bytes, staged_path
from fetcher.writeback import Writeback
from modelcache.cache.digests import HASH_CHUNK, Digests, hash_file
from modelcache.cache.files import FILE_MODE, make_shared_dir
from modelcache.contract.errors import DiskFullError, IntegrityError
from modelcache.contract.quantities import format_bytes

if TYPE_CHECKING:
    from fetcher.config import FetchSettings

log = logging.getLogger(__name__)
OnBytes = Callable[[int], None]  # bytes done (negative when a restart throws some away)


def download_all(
    source: Source,
    files: tuple[RemoteFile, ...],
    attempt_dir: Path,
    *,
    workers: int,
    on_bytes: OnBytes,
    retry_policy: RetryPolicy,
    range_chunk: int | None = None,
) -> Tally:
    """Download every file into attempt_dir/data/<path>; the first final error stops the others.

    At most `workers` streams run at once: whole files, and the ranged requests inside a large one
    (fetcher.ranged), which share the same slots. Returns how many bytes came from the source in this
    run and how many were already staged.
    """
    cancel = threading.Event()
    tally = Tally(on_bytes)
    ordered = sorted(files, key=lambda f: -f.size)  # big files first: they bound the wall time
    job = _Job(source, attempt_dir, tally, retry_policy, cancel, workers=max(1, workers), range_chunk=range_chunk)
    pool = ThreadPoolExecutor(max_workers=job.workers, thread_name_prefix="modelcache-download")
    try:
        futures = [pool.submit(_download_one, job, f) for f in ordered]
        done = _wait_interruptibly(futures)
        errors = [f.exception() for f in done if f.exception() is not None]
        if errors:
            cancel.set()
            wait(futures)
            first = next((e for e in errors if not isinstance(e, CancelledError)), errors[0])
            if isinstance(first, _OutOfSpaceError):
                raise _disk_full(first.path, files, attempt_dir) from first
            if first is not None:
                raise first
    except BaseException:
        # A signal (SIGTERM: the pod is being deleted) lands here as StoppedError: do not wait for reads in
        # flight, the caller exits the process; what the workers wrote so far is resumable like after SIGKILL.
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return tally


def download_with(
    settings: FetchSettings, source: Source, files: tuple[RemoteFile, ...], attempt_dir: Path, *, on_bytes: OnBytes
) -> Tally:
    """download_all with the fetcher's settings: its slots, its retry policy, its ranged chunk size."""
    return download_all(
        source,
        files,
        attempt_dir,
        workers=settings.workers,
        on_bytes=on_bytes,
        retry_policy=settings.retry,
        range_chunk=settings.range_chunk,
    )


class Tally:
    """Bytes of this run: fetched from the source, and resumed (already staged by an earlier attempt).

    Both also feed `on_bytes`, the progress of the owner record (resumed bytes count as done there).
    """

    def __init__(self, on_bytes: OnBytes) -> None:
        self._on_bytes = on_bytes
        self._lock = threading.Lock()
        self.fetched = 0
        self.resumed = 0

    def add_fetched(self, size: int) -> None:
        with self._lock:
            self.fetched += size
        self._on_bytes(size)

    def add_resumed(self, size: int) -> None:
        """Bytes found on disk."""
        with self._lock:
            self.resumed += size
        self._on_bytes(size)

    def discard(self, *, resumed: int, counted: int) -> None:
        """A ranged download that goes back to one stream: its bytes on disk no longer count."""
        with self._lock:
            self.resumed -= resumed
        self._on_bytes(-counted)

    def restart(self, state: _FileState) -> None:
        """A server that ignores Range: the file's bytes on disk are thrown away (what was fetched stays counted)."""
        with self._lock:
            self.resumed -= state.resumed
        self._on_bytes(-state.offset)
        state.resumed = 0


SIGNAL_CHECK = 0.2  # seconds between the main thread's looks at pending signals while downloads run


def _wait_interruptibly(futures: list[Future[None]]) -> set[Future[None]]:
    """Wait until all are done or one failed, waking often enough for a signal handler to run.

    A process-directed signal may be delivered to a download thread; Python then runs the handler only
    when the main thread next executes bytecode, which a wait without a timeout would put off to the end.
    """
    while True:
        done, pending = wait(futures, timeout=SIGNAL_CHECK, return_when=FIRST_EXCEPTION)
        if not pending or any(f.exception() is not None for f in done):
            return done


class _FileState:
    """How far a file is on disk, and the digests of exactly those bytes (kept in step across retries)."""

    def __init__(self, file: RemoteFile) -> None:
        self.digests = Digests(file)
        self.resumed = 0  # bytes of it an earlier attempt had staged

    @property
    def offset(self) -> int:
        return self.digests.size


@dataclass(frozen=True)
class _Job:
    """What every file's download shares: the source, the attempt, the counters, the stream slots."""

    source: Source
    attempt_dir: Path
    tally: Tally
    retry_policy: RetryPolicy
    cancel: threading.Event
    workers: int
    range_chunk: int | None
    slots: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slots", threading.BoundedSemaphore(self.workers))


def _download_one(job: _Job, file: RemoteFile) -> None:
    final = staged_path(job.attempt_dir, file)
    if final.exists() and final.stat().st_size == file.size:
        job.tally.add_resumed(file.size)  # verified by an earlier attempt (only verified files get this name)
        return
    part = part_path(job.attempt_dir, file)
    make_shared_dir(part.parent)
    chunk = ranged.chunk_size(file.size, job.workers, job.range_chunk)
    if chunk:
        try:
            _ranged(job, file, part, chunk)
            os.replace(part, final)
            return
        except ranged.RangesIgnoredError as err:
            log.info("%s: the source does not serve ranges (%s); downloading it in one stream", file.path, err)
            os.truncate(part, 0)
    state = _resume(part, file)
    state.resumed = state.offset
    job.tally.add_resumed(state.offset)
    with job.slots:
        retry(
            lambda: _stream(job.source, file, part, state, job.tally, job.cancel),
            policy=job.retry_policy,
            what=f"downloading {file.path}",
            advice="The pod will retry; if the source keeps failing, check its status and the network path from "
            "this node.",
            cancel=job.cancel,
            progress=lambda: f"from byte {state.offset}",
        )
    _verify(file, part, state)
    os.replace(part, final)


def _ranged(job: _Job, file: RemoteFile, part: Path, chunk: int) -> None:
    try:
        ranged.download(
            job.source,
            file,
            part,
            job.attempt_dir,
            chunk=chunk,
            streams=job.workers,
            slots=job.slots,
            tally=job.tally,
            retry_policy=job.retry_policy,
            cancel=job.cancel,
        )
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _OutOfSpaceError(file.path) from err
        raise


def _resume(part: Path, file: RemoteFile) -> _FileState:
    """Hash what a previous attempt wrote, so the download can go on from there."""
    state = _FileState(file)
    try:
        size = part.stat().st_size
    except FileNotFoundError:
        return state
    if part.stat().st_uid != os.geteuid():
        # A dead holder of another UID (pods of other workloads share the volume): its 0644 file is
        # not ours to append to, so its bytes go into a file of ours, hashed on the way.
        state.digests = _adopt(part, file, min(size, file.size))
    elif size > file.size:
        os.truncate(part, 0)
        return state
    else:
        state.digests = hash_file(part, file)
    if state.offset:
        log.info("%s: resuming after %s already on disk", file.path, format_bytes(state.offset))
    return state


def _adopt(part: Path, file: RemoteFile, size: int) -> Digests:
    """Copy the first `size` bytes of another UID's partial file into one of ours in its place; their digests."""
    digests = Digests(file)
    mine = part.with_name(f".{part.name}.{os.getpid()}.adopt")
    with part.open("rb") as theirs, open(mine, "wb") as ours:
        os.fchmod(ours.fileno(), FILE_MODE)
        while chunk := theirs.read(min(HASH_CHUNK, size - digests.size)):
            ours.write(chunk)
            digests.update(chunk)
    os.replace(mine, part)  # the directory is 0777: any UID may replace an entry in it
    return digests


def _stream(
    source: Source,
    file: RemoteFile,
    part: Path,
    state: _FileState,
    tally: Tally,
    cancel: threading.Event,
) -> None:
    """Append to the part file from state.offset; state follows every byte written, even if we fail."""
    if state.offset >= file.size:
        return
    start, chunks = source.open(file, state.offset)
    if start != state.offset:  # the server ignored Range: start over
        log.info("%s: the server does not resume; downloading from the start", file.path)
        tally.restart(state)
        state.digests.reset()
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.ftruncate(fd, state.offset)
        os.lseek(fd, state.offset, os.SEEK_SET)
        writeback = Writeback(fd, state.offset)
        for chunk in chunks:
            if cancel.is_set():
                raise CancelledError
            if state.offset + len(chunk) > file.size:
                raise IntegrityError(
                    f"{file.path}: the source sent more than the {file.size} bytes it declared; nothing was "
                    "published. If the model changed at the source, start the pod again."
                )
            _write_all(fd, chunk)
            state.digests.update(chunk)
            tally.add_fetched(len(chunk))
            writeback.wrote(state.offset)
        if state.offset < file.size:
            raise RetryableError(f"the connection ended after {state.offset} of {file.size} bytes")
        os.fsync(fd)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _OutOfSpaceError(file.path) from err
        raise
    finally:
        os.close(fd)
        getattr(chunks, "close", lambda: None)()  # its connection is closed now, not when collected


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _verify(file: RemoteFile, part: Path, state: _FileState) -> None:
    problem = state.digests.mismatch()
    if problem:
        part.unlink(missing_ok=True)  # a bad download must not be resumed
        raise IntegrityError(
            f"{file.path} failed verification: {problem}. Nothing was published. The pod will download it "
            "again; if this repeats, the source serves corrupt data or declares a wrong digest."
        )


class _OutOfSpaceError(Exception):
    """ENOSPC or EDQUOT while writing this file; download_all makes the DiskFullError, with the sizes."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _disk_full(path: str, files: tuple[RemoteFile, ...], attempt_dir: Path) -> DiskFullError:
    """What a full volume mid-download means: how much more, how much is free, and that nothing is lost."""
    staged = sum(staged_bytes(attempt_dir, f) for f in files)
    needed = sum(f.size for f in files) - staged
    stats = os.statvfs(attempt_dir)
    free = stats.f_bavail * stats.f_frsize
    return DiskFullError(
        f"the cache volume ran out of space while writing {path}: the model needs {format_bytes(needed)} more "
        f"but only {format_bytes(free)} is free ({needed} > {free} bytes). The {format_bytes(staged)} already "
        "on disk stay staged, and the next start resumes them. Free space (purge unused models) or make the "
        "volume bigger; nothing was published."
    )


def check_free_space(root: Path, needed: int) -> None:
    """Fail fast, with both numbers, when the volume cannot hold what is still to download."""
    stats = os.statvfs(root)
    free = stats.f_bavail * stats.f_frsize
    if needed > free:
        raise DiskFullError(
            f"the model needs {format_bytes(needed)} more on the cache volume but only {format_bytes(free)} "
            f"is free ({needed} > {free} bytes). Free space (purge unused models) or make the volume bigger."
        )
