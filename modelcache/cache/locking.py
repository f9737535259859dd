"""The per-model lock on the shared volume, with its owner record and "still waiting" logs.

The lock only saves duplicate downloads; correctness comes from private staging, verification and
atomic publication (see fetcher/fetch.py). So:

- It is an fcntl record lock: OFD (``F_OFD_SETLK``) where the kernel has it, else ``lockf``. These are
  the locks NFSv3/v4, EFS, CephFS, GPFS and Lustre keep coherent across nodes, and the kernel drops
  them when the holder dies. ``flock`` is node-local on several of these.
- It is taken without blocking, in a polling loop with jitter, under a timeout; the loop polls often at
  first and backs off to MODELCACHE_LOCK_POLL (poll_interval), so a short download wakes its waiters
  promptly and a long one costs no more tries than before. Between two tries a waiter sleeps on a
  blocking request for the same OFD lock (_Waker): the kernel grants it the moment the holder lets go
  on a local filesystem, an NFSv4.1 server says so with a CB_NOTIFY_LOCK callback, NFSv3's lockd with a
  GRANTED callback; where none of these exists, the NFS client retries it at its own backoff (1 s up to
  30 s), fewer tries than the loop's. The loop stays the judge: takeover, timeout and logs work as before.
- The holder writes an owner record (pod, node, pid, progress) and refreshes it as a heartbeat. Waiters
  log who holds the lock, and how far it got, every ~10 s. They judge the heartbeat on their own
  monotonic clock, so clock skew between nodes does not matter.
- A holder whose heartbeat stopped (a dead node: its NFS lock may outlive it by minutes, or forever on
  NFSv3) is reported, and after a grace period taken over. The waiter moves the lock file aside, so that
  everyone locks a fresh one. Taking over is safe because publication is idempotent: at worst, two
  fetchers download the same bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from modelcache.cache.files import write_atomically
from modelcache.cache.layout import CacheLayout
from modelcache.cache.owners import Identity, OwnerRecord, Progress, describe_holder
from modelcache.cache.patience import LockSettings
from modelcache.contract.errors import LockTimeoutError
from modelcache.contract.quantities import format_bytes

log = logging.getLogger(__name__)
# struct flock {short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid;} padded to 32 bytes.
_FLOCK_FORMAT = "@hhqqi4x"
_FLOCK = struct.pack(_FLOCK_FORMAT, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
_FLOCK_SHARED = struct.pack(_FLOCK_FORMAT, fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
_HELD = (errno.EAGAIN, errno.EACCES)
_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


class LockState(Enum):
    HELD = "held"
    TAKEN_OVER = "taken over from a stale holder"
    UNSUPPORTED = "not available on this filesystem"
    DISABLED = "disabled by configuration"


class ModelLock:
    """The lock of one model key."""

    def __init__(
        self,
        layout: CacheLayout,
        key: str,
        *,
        identity: Identity,
        settings: LockSettings,
        source: str = "",
        include: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.source = source
        self.include = include
        self.path = layout.lock_path(key)
        self.owner_path = layout.owner_path(key)
        self.identity = identity
        self.settings = settings
        self._clock = clock
        self._fd: int | None = None
        self._waker: _Waker | None = None
        self._ofd = False  # the last try used an OFD lock: a blocking request of the same lock can wait
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._acquired_at = time.time()
        self.state: LockState | None = None

    # --- taking and releasing ---------------------------------------------------------------------
    def try_acquire(self, *, purpose: str) -> LockState | None:
        """One attempt without waiting, for the admin tools: the state, or None when someone holds it.

        `purpose` goes into the owner record ("purge", "rm"), so that a fetcher waiting meanwhile logs
        what holds the lock.
        """
        self._open()
        try:
            if not self._try_lock():
                self.release()
                return None
        except _LocksUnsupportedError:
            self.release()
            return LockState.UNSUPPORTED
        self.state = LockState.HELD
        self._acquired_at = time.time()
        self._write_record(Progress(), attempt=purpose)
        return self.state

    def acquire(self) -> LockState:
        """Wait for the lock (raises LockTimeoutError after the timeout)."""
        if not self.settings.enabled:
            self.state = LockState.DISABLED
            return self.state
        started = self._clock()
        watcher = _OwnerWatcher(self.owner_path, self._clock)
        last_log = started - self.settings.log_every  # log at once when we have to wait
        self._open()
        while True:
            try:
                if self._try_lock():
                    self.state = LockState.HELD
                    self._acquired_at = time.time()
                    self._write_record(Progress(), attempt="")
                    return self.state
            except _LocksUnsupportedError as err:
                log.warning(
                    "file locks are %s (%s): fetching without the lock; the result is still correct, "
                    "but pods that start together may each download",
                    LockState.UNSUPPORTED.value,
                    err,
                    extra={"model_key": self.key},
                )
                self.state = LockState.UNSUPPORTED
                return self.state
            now = self._clock()
            owner, quiet_for = watcher.observe()
            if now - last_log >= self.settings.log_every:
                self._log_waiting(owner, now - started, quiet_for)
                last_log = now
            if self._should_take_over(quiet_for) and self._take_over(owner, quiet_for):
                self.state = LockState.TAKEN_OVER
                self._acquired_at = time.time()
                self._write_record(Progress(), attempt="")
                return self.state
            if now - started >= self.settings.timeout:
                raise LockTimeoutError(self._timeout_message(owner, now - started))
            self._reopen_if_replaced()
            self._sleep(poll_interval(now - started, self.settings.poll) * _jitter())

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.state in (LockState.HELD, LockState.TAKEN_OVER):
            with contextlib.suppress(FileNotFoundError):
                self.owner_path.unlink()
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the record lock
            self._fd = None

    def start_heartbeat(self, progress: Progress, *, attempt: str, touch: Path | None = None) -> None:
        """Write the owner record now and every heartbeat interval, until release()."""

        def loop() -> None:
            while not self._stop.wait(self.settings.heartbeat_every):
                self._write_record(progress, attempt=attempt, touch=touch)

        self._write_record(progress, attempt=attempt, touch=touch)
        self._heartbeat = threading.Thread(target=loop, name="modelcache-heartbeat", daemon=True)
        self._heartbeat.start()

    def _write_record(self, progress: Progress, *, attempt: str, touch: Path | None = None) -> None:
        """The owner record: who holds the lock, since when, how far; waiters read and log it."""
        done, total = progress.snapshot()
        record = OwnerRecord(
            pod=self.identity.pod,
            namespace=self.identity.namespace,
            node=self.identity.node,
            pid=self.identity.pid,
            host=self.identity.host,
            key=self.key,
            source=self.source,
            include=self.include,
            attempt=attempt,
            started_at=self._acquired_at,
            heartbeat_at=time.time(),
            bytes_done=done,
            bytes_total=total,
            lock=self.state.value if self.state else None,
        )
        try:
            write_atomically(self.owner_path, record.to_json())
            if touch is not None:
                os.utime(touch)
        except OSError as err:
            log.warning("could not write the owner record %s: %s", self.owner_path, err, extra={"model_key": self.key})

    # --- the fcntl lock -----------------------------------------------------------------------------
    def _open(self) -> None:
        self._fd = _open_lock_file(self.path)
        self._waker = None  # a waker of the previous file stays blocked there, harmlessly (see _Waker)

    def _sleep(self, seconds: float) -> None:
        """Wait `seconds` before the next try, or less if the holder lets go meanwhile."""
        if not self._ofd:
            time.sleep(seconds)
            return
        if self._waker is None:
            self._waker = _Waker(self._descriptor)
        self._waker.granted.wait(seconds)

    @property
    def _descriptor(self) -> int:
        if self._fd is None:
            raise RuntimeError("the lock file is not open")
        return self._fd

    def _try_lock(self) -> bool:
        fd = self._descriptor
        if hasattr(fcntl, "F_OFD_SETLK"):
            held = _attempt(lambda: fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK), fall_back_on_einval=True)
            self._ofd = held is not None
            if held is not None:
                return held
        return bool(_attempt(lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB), fall_back_on_einval=False))

    def _reopen_if_replaced(self) -> None:
        """After another waiter took over, the path names a new lock file: wait on that one."""
        fd = self._descriptor
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = -1
        if current != os.fstat(fd).st_ino:
            os.close(fd)
            self._open()

    # --- stale holders ------------------------------------------------------------------------------
    def _should_take_over(self, quiet_for: float) -> bool:
        return self.settings.takeover_after > 0 and quiet_for >= self.settings.takeover_after

    def _take_over(self, owner: OwnerRecord | None, quiet_for: float) -> bool:
        fd = self._descriptor
        try:
            if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                return False  # someone else took over already; _reopen_if_replaced follows
            os.rename(self.path, self.path.with_name(f"{self.path.name}.stale-{int(time.time())}-{os.getpid()}"))
        except FileNotFoundError:
            return False
        log.warning(
            "taking over the lock of %s: its holder %s has shown no heartbeat for %.0f s",
            self.key,
            describe_holder(owner),
            quiet_for,
            extra={"model_key": self.key},
        )
        os.close(fd)
        self._open()
        return self._try_lock()

    def _log_waiting(self, owner: OwnerRecord | None, waited: float, quiet_for: float) -> None:
        what = f"waiting {waited:.0f} s for the lock of {self.key}, held by {describe_holder(owner)}"
        if owner is not None and owner.bytes_total:
            what += f": {format_bytes(owner.bytes_done)} of {format_bytes(owner.bytes_total)} ({owner.percent} %)"
        if quiet_for >= self.settings.stale_after:
            what += (
                f"; STALE: no heartbeat for {quiet_for:.0f} s (its node may be down; NFS can keep a dead "
                "node's lock for minutes, NFSv3 until it reboots)"
            )
            if self.settings.takeover_after > 0:
                what += f"; taking over after {self.settings.takeover_after:.0f} s"
        log.info("%s", what, extra={"model_key": self.key})

    def _timeout_message(self, owner: OwnerRecord | None, waited: float) -> str:
        return (
            f"gave up after waiting {waited:.0f} s for the lock of model {self.key}, held by {describe_holder(owner)}. "
            "The pod will retry. A download that takes longer needs more patience: raise the webhook setting "
            f"MODELCACHE_FETCHER_LOCK_TIMEOUT (now {self.settings.timeout:g}s). If the holder is gone for good, lower "
            f"MODELCACHE_FETCHER_TAKEOVER_AFTER (now {self.settings.takeover_after:g}s; 0 never takes over), or delete "
            "its owner record and lock file under .modelcache/ on the cache volume (docs/fetcher.md, 'A lock held by "
            "a dead node')."
        )


FIRST_POLL = 0.05  # seconds: the shortest wait between two tries for the lock


def poll_interval(waited: float, poll: float) -> float:
    """How long a waiter sleeps before its next try: a tenth of how long it has waited, from FIRST_POLL up
    to `poll`.

    A download that ends soon after the waiter came is noticed soon (within a tenth of the wait, not a
    whole `poll` later), and a long wait costs as many tries as before: the extra tries of the first
    `10 x poll` seconds are a constant (about 30 with the 1 s default), whatever the wait.
    """
    return min(poll, max(FIRST_POLL, waited / 10))


def _jitter() -> float:
    """+-50 %, so waiters that started together do not ask together."""
    import random  # off the cache-hit path, which never waits

    return random.uniform(0.5, 1.5)  # noqa: S311 (jitter, not crypto)


class _LocksUnsupportedError(OSError):
    pass


def _open_lock_file(path: Path) -> int:
    """Open (or create) a lock file that every fetcher UID can open too."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with contextlib.suppress(PermissionError):
        os.fchmod(fd, 0o666)  # the umask took some bits; another UID's fetcher must be able to open it
    return fd


def lock_is_held(layout: CacheLayout, key: str) -> bool | None:
    """Whether some process holds the lock of `key`, without taking it (None: cannot tell here).

    F_OFD_GETLK (or F_GETLK) asks the kernel, and on NFS the lock manager, about a conflicting lock;
    nothing is taken, so a fetcher about to lock never sees us.
    """
    try:
        fd = os.open(layout.lock_path(key), os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        commands = [fcntl.F_OFD_GETLK] if hasattr(fcntl, "F_OFD_GETLK") else []
        for command in [*commands, fcntl.F_GETLK]:
            try:
                answer = fcntl.fcntl(fd, command, _FLOCK)
            except OSError as err:
                if err.errno == errno.EINVAL:
                    continue
                return None
            return bool(struct.unpack(_FLOCK_FORMAT, answer)[0] != fcntl.F_UNLCK)
        return None
    finally:
        os.close(fd)


class RepoGuard:
    """A reader-writer lock over the shared blobs of one Hub repository.

    Keys of one repository (other revisions, other include sets) share its blobs/: a fetcher counts
    a blob that is already there as downloaded. So fetchers hold this lock shared from planning their
    download to publishing it, and the purger deletes blobs only while it holds the lock exclusively
    (without waiting: when a download of the repository is under way, its blobs wait for the next round).
    """

    def __init__(self, layout: CacheLayout, folder: str, *, poll: float = 0.2, timeout: float = 3600.0) -> None:
        """`folder`: the repository's folder under hub/ (models--<org>--<name>)."""
        self.path = layout.locks / f"hub.{folder}.lock"
        self.poll = poll
        self.timeout = timeout
        self._fd: int | None = None

    def share(self) -> bool:
        """Wait for the shared lock (the purger holds it exclusively for seconds at most).

        False when the filesystem has no record locks: then nothing guards the blobs, and the purger
        (which cannot take this lock either) leaves them alone.
        """
        self._fd = _open_lock_file(self.path)
        started = time.monotonic()
        while True:
            held = self._set(_FLOCK_SHARED)
            if held is not False:
                return bool(held)
            if time.monotonic() - started >= self.timeout:
                raise LockTimeoutError(
                    f"gave up after {self.timeout:.0f} s waiting for {self.path.name}, which the purger holds while "
                    "it deletes unused blobs of this repository; a purger should hold it for seconds only"
                )
            time.sleep(self.poll * _jitter())

    def try_exclusive(self) -> bool:
        """One attempt at the exclusive lock; False when a fetcher holds it or locks do not work here."""
        self._fd = _open_lock_file(self.path)
        if self._set(_FLOCK):
            return True
        self.release()
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _set(self, request: bytes) -> bool | None:
        """True: locked; False: a conflicting lock is held; None: no record locks on this filesystem."""
        fd = self._fd
        if fd is None:
            raise RuntimeError("the repository lock file is not open")
        command = fcntl.F_OFD_SETLK if hasattr(fcntl, "F_OFD_SETLK") else fcntl.F_SETLK
        try:
            fcntl.fcntl(fd, command, request)
            return True
        except OSError as err:
            if err.errno in _HELD:
                return False
            if err.errno == errno.EINVAL and command != fcntl.F_SETLK:
                try:
                    fcntl.fcntl(fd, fcntl.F_SETLK, request)
                    return True
                except OSError as again:
                    err = again
                if err.errno in _HELD:
                    return False
            if err.errno in (*_UNSUPPORTED, errno.EINVAL):
                return None
            raise


def _attempt(take: Callable[[], object], *, fall_back_on_einval: bool) -> bool | None:
    """True: locked; False: someone holds it; None: this kind of lock is not available (try the next)."""
    try:
        take()
        return True
    except OSError as err:
        if err.errno in _HELD:
            return False
        if err.errno in _UNSUPPORTED:
            raise _LocksUnsupportedError(os.strerror(err.errno)) from err
        if err.errno == errno.EINVAL and fall_back_on_einval:
            return None  # no OFD locks on this kernel or filesystem: fall back to lockf
        raise


class _Waker:
    """A thread blocked in F_OFD_SETLKW on a duplicate of the lock file's descriptor.

    The duplicate shares the open file description, which owns OFD locks: when the kernel grants the
    blocked request, the waiter's own next F_OFD_SETLK succeeds at once (same owner), and closing the
    duplicate keeps the lock, held by the description through the waiter's descriptor. A waker left
    behind on a lock file that was moved aside (a takeover) can only ever lock that old file, which no
    one uses, and lets it go when it closes its duplicate. Never used with lockf, whose locks belong to
    the process and are dropped by closing any descriptor of the file.
    """

    def __init__(self, fd: int) -> None:
        self.granted = threading.Event()
        self._fd = os.dup(fd)
        threading.Thread(target=self._wait, name="lock-waker", daemon=True).start()

    def _wait(self) -> None:
        try:
            fcntl.fcntl(self._fd, fcntl.F_OFD_SETLKW, _FLOCK)
            self.granted.set()
        except OSError:
            pass  # the polling loop still tries, and says what it finds
        finally:
            os.close(self._fd)


class _OwnerWatcher:
    """Reads the owner record and measures, on our own clock, how long it has not changed."""

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self.path = path
        self._clock = clock
        self._raw: bytes | None = None
        self._changed_at = clock()

    def observe(self) -> tuple[OwnerRecord | None, float]:
        try:
            raw = self.path.read_bytes()
        except OSError:
            raw = b""
        now = self._clock()
        if raw != self._raw:
            self._raw = raw
            self._changed_at = now
        return OwnerRecord.from_json(raw), now - self._changed_at
