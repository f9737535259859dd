"""Downloading a plan's files into a private staging directory: in parallel, streamed, verified.

Memory is bounded by workers x chunk size whatever the model's size: bytes go straight to disk, and
sha256 (and, for small Hub files, the git blob sha1) is computed while they stream. A partial file
left by a killed fetcher is resumed with a Range request after its bytes are hashed again, so a crash
costs only the bytes not yet written. A file is renamed to its staged name only once verified.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from fetcher.config import RetryPolicy
from fetcher.errors import DiskFullError, IntegrityError, TransferError
from fetcher.layout import FILE_MODE, format_bytes, make_shared_dir
from fetcher.locking import Progress
from fetcher.sources import RemoteFile, RetryableError, Source

log = logging.getLogger(__name__)
CHUNK = 1 << 20
PART_SUFFIX = ".part"


class _CancelledError(Exception):
    pass


def staged_path(attempt_dir: Path, file: RemoteFile) -> Path:
    return attempt_dir / "data" / file.path


def download_all(
    source: Source,
    files: tuple[RemoteFile, ...],
    attempt_dir: Path,
    *,
    workers: int,
    progress: Progress,
    retry: RetryPolicy,
) -> None:
    """Download every file into attempt_dir/data/<path>; the first final error stops the others."""
    cancel = threading.Event()
    ordered = sorted(files, key=lambda f: -f.size)  # big files first: they bound the wall time
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="modelcache-download") as pool:
        futures = [pool.submit(_download_one, source, f, attempt_dir, progress, retry, cancel) for f in ordered]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        errors = [f.exception() for f in done if f.exception() is not None]
        if errors:
            cancel.set()
            wait(futures)
            first = next((e for e in errors if not isinstance(e, _CancelledError)), errors[0])
            if first is not None:
                raise first


class _FileState:
    """How far a file is on disk, and the digests of exactly those bytes (kept in step across retries)."""

    def __init__(self, file: RemoteFile) -> None:
        self.hashes = _Hashes(file)
        self.offset = 0

    def restart(self) -> None:
        self.hashes.reset()
        self.offset = 0


def _download_one(
    source: Source,
    file: RemoteFile,
    attempt_dir: Path,
    progress: Progress,
    retry: RetryPolicy,
    cancel: threading.Event,
) -> None:
    final = staged_path(attempt_dir, file)
    if final.exists() and final.stat().st_size == file.size:
        progress.add(file.size)  # verified by an earlier attempt (only verified files get this name)
        return
    part = final.with_name(final.name + PART_SUFFIX)
    make_shared_dir(part.parent)
    state = _FileState(file)
    _resume(part, file, state)
    progress.add(state.offset)
    for attempt in range(retry.attempts):
        if cancel.is_set():
            raise _CancelledError
        try:
            _stream(source, file, part, state, progress, cancel)
            break
        except RetryableError as err:
            if attempt == retry.attempts - 1:
                raise TransferError(
                    f"downloading {file.path} failed {retry.attempts} times, the last time with: {err}. "
                    "The pod will retry; if the source keeps failing, check its status and the network path "
                    "from this node."
                ) from err
            pause = retry.delay(attempt, err.retry_after)
            log.warning(
                "%s: %s; retrying in %.1f s from byte %d (attempt %d of %d)",
                file.path,
                err,
                pause,
                state.offset,
                attempt + 2,
                retry.attempts,
            )
            if cancel.wait(pause):
                raise _CancelledError from err
    _verify(file, part, state)
    os.replace(part, final)


def _resume(part: Path, file: RemoteFile, state: _FileState) -> None:
    """Hash what a previous attempt wrote, so the download can go on from there."""
    try:
        size = part.stat().st_size
    except FileNotFoundError:
        return
    if size > file.size:
        os.truncate(part, 0)
        return
    with part.open("rb") as existing:
        while chunk := existing.read(CHUNK):
            state.hashes.update(chunk)
    state.offset = size
    if size:
        log.info("%s: resuming after %s already on disk", file.path, format_bytes(size))


def _stream(
    source: Source,
    file: RemoteFile,
    part: Path,
    state: _FileState,
    progress: Progress,
    cancel: threading.Event,
) -> None:
    """Append to the part file from state.offset; state follows every byte written, even if we fail."""
    if state.offset >= file.size:
        return
    start, chunks = source.open(file, state.offset)
    if start != state.offset:  # the server ignored Range: start over
        log.info("%s: the server does not resume; downloading from the start", file.path)
        progress.add(-state.offset)
        state.restart()
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.ftruncate(fd, state.offset)
        os.lseek(fd, state.offset, os.SEEK_SET)
        for chunk in chunks:
            if cancel.is_set():
                raise _CancelledError
            if state.offset + len(chunk) > file.size:
                raise IntegrityError(
                    f"{file.path}: the source sent more than the {file.size} bytes it declared; nothing was "
                    "published. If the model changed at the source, start the pod again."
                )
            _write_all(fd, chunk)
            state.hashes.update(chunk)
            state.offset += len(chunk)
            progress.add(len(chunk))
        if state.offset < file.size:
            raise RetryableError(f"the connection ended after {state.offset} of {file.size} bytes")
        os.fsync(fd)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"the cache volume ran out of space while writing {file.path}. Free space on it (purge unused "
                "models) or make it bigger; nothing was published."
            ) from err
        raise
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _verify(file: RemoteFile, part: Path, state: _FileState) -> None:
    size, hashes = state.offset, state.hashes
    problem = None
    if size != file.size:
        problem = f"{size} bytes instead of the declared {file.size}"
    elif file.sha256 and hashes.sha256 and hashes.sha256.hexdigest() != file.sha256.lower():
        problem = f"sha256 {hashes.sha256.hexdigest()} instead of the declared {file.sha256}"
    elif file.git_sha1 and hashes.git_sha1 and hashes.git_sha1.hexdigest() != file.git_sha1.lower():
        problem = f"git blob sha1 {hashes.git_sha1.hexdigest()} instead of the declared {file.git_sha1}"
    if problem:
        part.unlink(missing_ok=True)  # a bad download must not be resumed
        raise IntegrityError(
            f"{file.path} failed verification: {problem}. Nothing was published. The pod will download it "
            "again; if this repeats, the source serves corrupt data or declares a wrong digest."
        )


class _Hashes:
    """sha256 and/or the git blob sha1 of a file, as far as its bytes have been seen."""

    def __init__(self, file: RemoteFile) -> None:
        self.file = file
        self.sha256: hashlib._Hash | None = None
        self.git_sha1: hashlib._Hash | None = None
        self.reset()

    def reset(self) -> None:
        self.sha256 = hashlib.sha256() if self.file.sha256 else None
        self.git_sha1 = None
        if self.file.git_sha1:
            self.git_sha1 = hashlib.sha1(f"blob {self.file.size}\0".encode(), usedforsecurity=False)

    def update(self, chunk: bytes) -> None:
        if self.sha256 is not None:
            self.sha256.update(chunk)
        if self.git_sha1 is not None:
            self.git_sha1.update(chunk)


def check_free_space(root: Path, needed: int) -> None:
    """Fail fast, with both numbers, when the volume cannot hold what is still to download."""
    stats = os.statvfs(root)
    free = stats.f_bavail * stats.f_frsize
    if needed > free:
        raise DiskFullError(
            f"the model needs {format_bytes(needed)} more on the cache volume but only {format_bytes(free)} "
            f"is free ({needed} > {free} bytes). Free space (purge unused models) or make the volume bigger."
        )
