"""Whether the cache volume's root lets fetchers of any UID in, and how to say what to fix when it does not.

Our own directories are created 0777 (modelcache.cache.files); only the root comes from elsewhere: the
provisioner made it, often owned by root with mode 0755, and fsGroup does not help on NFS. A fetcher
that cannot write there must say so with the facts an operator needs (who owns it, its mode, who the
fetcher is) and the fixes in order, never as a bug with a traceback.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from modelcache.cache.files import SHARED_DIR_MODE

DENIED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


@dataclass(frozen=True)
class PathFacts:
    """Owner and mode of a path (or why they could not be read), for a message."""

    path: Path
    uid: int | None
    gid: int | None
    mode: int | None

    @classmethod
    def of(cls, path: Path) -> PathFacts:
        try:
            st = path.stat()
        except OSError:
            return cls(path, None, None, None)
        return cls(path, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))

    def text(self) -> str:
        if self.mode is None:
            return f"{self.path} (its owner and mode cannot be read)"
        return f"{self.path} (owner {self.uid}:{self.gid}, mode {self.mode:04o})"


def whoami() -> str:
    groups = sorted(set(os.getgroups()) - {os.getegid()})
    extra = f", groups {','.join(map(str, groups))}" if groups else ""
    return f"UID {os.geteuid()}, GID {os.getegid()}{extra}"


def nearest_existing(path: Path) -> Path:
    """The path itself, or the closest ancestor that exists: the directory the kernel refused to write."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def is_denied(err: OSError) -> bool:
    return err.errno in DENIED


def denied_message(err: OSError, root: Path, *, uid_setting: str) -> str:
    """What went wrong at the cache root, with the facts and the fixes, in the order to try them."""
    failed = Path(err.filename) if err.filename else root
    refused = nearest_existing(failed if failed.exists() else failed.parent)
    if err.errno == errno.EROFS:
        return (
            f"the cache volume at {root} is mounted read-only (writing {failed} failed: {err.strerror}). The "
            "fetcher needs it read-write: check the PVC's access mode (ReadWriteMany) and that nothing mounts "
            "it readOnly in this pod's init container"
        )
    root_facts = PathFacts.of(root)
    facts = PathFacts.of(refused).text()
    if refused != root:
        facts += f"; the volume root is {root_facts.text()}"
    return (
        f"cannot write the cache volume: {err.strerror} on {failed}. {facts}; the fetcher runs as {whoami()}. "
        f"Fixes, in order: (1) make the volume root writable for every UID, once: `chmod 0777 {root}` from a pod "
        f'that mounts it as its owner or as root, or `modelcache prepare` there (docs/install.md, "Prepare the '
        'volume"; a node-local cache, on each node: "Prepare the nodes"), or have the provisioner create it so '
        "(the NFS CSI driver's StorageClass parameter "
        'mountPermissions: "0777"; an EFS access point\'s uid, gid and directoryPerms); (2) or run the fetcher '
        f"as the owner: set the pod's securityContext.runAsUser (and runAsGroup) to {root_facts.uid}, or, for "
        f"pods that run as root, the webhook's {uid_setting}"
    )


def open_to_all(path: Path) -> bool:
    """Whether every UID may create entries in this directory (its mode has every rwx bit)."""
    facts = PathFacts.of(path)
    return facts.mode is not None and facts.mode & SHARED_DIR_MODE == SHARED_DIR_MODE


def prepare_root(root: Path) -> str:
    """Make the root open to every UID (SHARED_DIR_MODE); say what was done. Raises OSError if refused."""
    facts = PathFacts.of(root)
    if facts.mode is None:
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(root))
    if open_to_all(root):
        return f"{facts.text()} is already writable for every UID; nothing to do"
    os.chmod(root, facts.mode | SHARED_DIR_MODE)
    return f"{facts.text()} is now mode {(facts.mode | SHARED_DIR_MODE):04o}: fetchers of any UID can write it"
