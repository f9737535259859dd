"""The layout of the cache volume, and the ready marker.

```
<root>/                                   the cache volume (MODELCACHE_CACHE_ROOT, the mount path)
├── hub/                                  a huggingface_hub cache: HF_HUB_CACHE points here
│   └── models--<org>--<name>/
│       ├── blobs/<etag>                  file content: sha256 (LFS files) or git blob sha1 (small files)
│       ├── snapshots/<commit>/<path>     relative symlinks to ../../blobs/<etag>
│       └── refs/<revision>               the commit, 40 hex characters, no newline
├── store/<key>/<version>/<path>          s3:// and https:// models, one directory per pinned version
├── ready/<key>                           MODEL_PATH: a relative symlink to the ready model's directory
└── .modelcache/                          the fetchers' own state (never read by apps)
    ├── markers/<key>.json                the ready marker: written last; present and consistent = ready
    ├── locks/<key>.lock                  the per-model lock (fcntl record lock; never deleted)
    ├── owners/<key>.json                 who holds the lock, heartbeat and progress
    ├── staging/<key>/<attempt>/          private downloads; partial files are resumed after a crash
    ├── usage/<key>                       last used: its mtime (touched before every hit check)
    ├── outcomes/<time>-<pid>-<key>.json  one record per fetcher run (fetcher/outcomes.py)
    └── purge-schedule.json               when the cache agent last purged (admin/agent.py)
```

Nothing under ``hub/``, ``store/`` or ``ready/`` is ever written in place: every file and link appears
by an atomic rename, so a reader sees either nothing or a complete, verified file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fetcher import contract

log = logging.getLogger(__name__)
STATE_DIR = ".modelcache"
STORE_DIR = "store"
MARKER_VERSION = 1
FILE_MODE = 0o644
# Fetchers of different workloads may run under different UIDs (OpenShift assigns them per namespace):
# each must be able to add to the shared directories, and the purge (any UID) must be able to remove
# what any of them published. So every directory is 0777 and every file 0644: a file is never changed
# in place by another UID, and digests in the markers let `modelcache verify` find any change. Apps
# mount the volume read-only; only fetchers, the cache agent and operators write here.
SHARED_DIR_MODE = 0o777


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model as published: path relative to the model directory, size and digests."""

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None


@dataclass(frozen=True, slots=True)
class Marker:
    """The ready marker: what was published for a key, and where."""

    key: str
    source: str
    version: str  # the immutable identity: a commit, or the digest of an object manifest
    path: str  # the model directory, relative to the cache root
    files: tuple[ModelFile, ...]
    published_at: float
    include: tuple[str, ...] = ()
    marker_version: int = MARKER_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        data = asdict(self)
        return json.dumps(data, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Marker:
        data: dict[str, Any] = json.loads(raw)
        if data.get("marker_version") != MARKER_VERSION:
            raise ValueError(f"marker version {data.get('marker_version')!r}, expected {MARKER_VERSION}")
        files = tuple(ModelFile(**f) for f in data.pop("files"))
        include = tuple(data.pop("include", ()))
        return cls(files=files, include=include, **data)


class CacheLayout:
    """Paths on the cache volume, for one cache root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hub = root / contract.HUB_DIR
        self.ready_dir = root / contract.READY_DIR
        self.store = root / STORE_DIR
        self.state = root / STATE_DIR
        self.markers = self.state / "markers"
        self.locks = self.state / "locks"
        self.owners = self.state / "owners"
        self.staging = self.state / "staging"
        self.usage = self.state / "usage"
        self.outcomes = self.state / "outcomes"

    def ensure(self) -> None:
        """Create the shared directories, writable by every fetcher."""
        for directory in (
            self.hub,
            self.ready_dir,
            self.store,
            self.state,
            self.markers,
            self.locks,
            self.owners,
            self.staging,
            self.usage,
            self.outcomes,
        ):
            make_shared_dir(directory)

    def marker_path(self, key: str) -> Path:
        return self.markers / f"{key}.json"

    def lock_path(self, key: str) -> Path:
        return self.locks / f"{key}.lock"

    def owner_path(self, key: str) -> Path:
        return self.owners / f"{key}.json"

    def staging_dir(self, key: str) -> Path:
        return self.staging / key

    def ready_link(self, key: str) -> Path:
        return self.ready_dir / key

    def usage_path(self, key: str) -> Path:
        return self.usage / key

    def hub_repo_dir(self, repo_id: str) -> Path:
        """The huggingface_hub cache folder of a model repository."""
        return self.hub / ("models--" + repo_id.replace("/", "--"))

    def store_dir(self, key: str, version: str) -> Path:
        return self.store / key / version


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path` (links count as themselves; vanishing files are skipped)."""
    total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def list_names(directory: Path) -> list[str]:
    """The entries of a directory; none when it does not exist."""
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


def read_marker(layout: CacheLayout, key: str) -> Marker | None:
    """The marker of a key, or None when there is none or it cannot be read."""
    try:
        raw = layout.marker_path(key).read_bytes()  # open(), not stat(): NFS revalidates on open
    except FileNotFoundError:
        return None
    try:
        marker = Marker.from_json(raw)
    except (ValueError, TypeError, KeyError) as err:
        log.warning("ignoring an unreadable marker for %s: %s", key, err)
        return None
    return marker if marker.key == key else None


def check_ready(layout: CacheLayout, key: str) -> Marker | None:
    """The marker if the model is ready: marker readable, MODEL_PATH link right, every file in place.

    Sizes are checked, not digests: a digest check reads the whole model (`modelcache verify` does).
    """
    marker = read_marker(layout, key)
    if marker is None:
        return None
    problem = find_problem(layout, marker)
    if problem is not None:
        log.warning("%s; fetching again", problem)
        return None
    return marker


def find_problem(layout: CacheLayout, marker: Marker) -> str | None:
    """What makes a marked model not ready (a wrong link, a missing or short file), or None."""
    model_dir = layout.root / marker.path
    link = layout.ready_link(marker.key)
    try:
        if os.readlink(link) != os.path.relpath(model_dir, link.parent):
            return f"{link} points elsewhere than its marker says"
        for item in marker.files:
            if (model_dir / item.path).stat().st_size != item.size:
                return f"{marker.path}/{item.path} has the wrong size"
    except OSError as err:
        return f"the model of {marker.key} is not complete ({err})"
    return None


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


def write_atomically(path: Path, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Write a file so that readers see the old content or the new one, never a part."""
    import tempfile  # off the hit path

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def symlink_atomically(target: str, path: Path) -> None:
    """Make `path` a symlink to `target`, replacing whatever link was there in one step."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_dir(path: Path) -> None:
    """Persist a directory's entries (a rename is durable only once its directory is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network filesystems refuse fsync on directories; rename is still atomic there
    finally:
        os.close(fd)


def make_shared_dir(path: Path) -> None:
    """mkdir -p with SHARED_DIR_MODE on the directories it creates (umask ignored)."""
    if path.is_dir():
        return
    make_shared_dir(path.parent)
    try:
        path.mkdir(mode=SHARED_DIR_MODE)
    except FileExistsError:
        return
    with contextlib.suppress(PermissionError):
        path.chmod(SHARED_DIR_MODE)


_MAX_REMOTE_PATH = 1024


def check_remote_path(path: str, *, source: str) -> str:
    """A file path named by a remote (Hub tree, S3 key): relative, inside the model, no tricks."""
    from fetcher.errors import IntegrityError

    parts = path.split("/")
    bad = (
        not path
        or len(path) > _MAX_REMOTE_PATH
        or path.startswith("/")
        or "\\" in path
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in path)
        or any(part in ("", ".", "..") or len(part.encode()) > 255 for part in parts)
        or parts[-1].endswith(".part")
    )
    if bad:
        raise IntegrityError(
            f"{source} lists a file named {path[:200]!r}, which could escape the model directory or is not a "
            "valid file name; refusing the whole model. Check the source."
        )
    return path
