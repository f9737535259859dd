"""Files on the shared volume: atomic writes and links, durable renames, directories every UID can use.

Nothing under ``hub/``, ``store/`` or ``ready/`` is ever written in place: every file and link appears
by an atomic rename, so a reader sees either nothing or a complete, verified file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_MODE = 0o644
# Fetchers of different workloads may run under different UIDs (OpenShift assigns them per namespace):
# each must be able to add to the shared directories, and the purge (any UID) must be able to remove
# what any of them published. So every directory is 0777 and every file 0644: a file is never changed
# in place by another UID, and digests in the markers let `modelcache verify` find any change. Apps
# mount the volume read-only; only fetchers, the cache agent and operators write here.
SHARED_DIR_MODE = 0o777


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


def write_atomically(path: Path, data: bytes, *, mode: int = FILE_MODE, durable: bool = True) -> None:
    """Write a file so that readers see the old content or the new one, never a part.

    `durable`: fsync the data and the directory (state); False for records whose loss a crash may cost.
    """
    tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"  # O_EXCL: a name no other writer has
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def symlink_atomically(target: str, path: Path) -> None:
    """Make `path` a symlink to `target`, replacing whatever link was there in one step."""
    tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
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
