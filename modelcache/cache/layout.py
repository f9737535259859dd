"""The layout of the cache volume: every path of it, in one place.

```
<root>/                                   the cache volume (MODELCACHE_CACHE_ROOT, the mount path)
├── hub/                                  a huggingface_hub cache: HF_HUB_CACHE points here
│   └── models--<org>--<name>/            one repository (HubRepo)
│       ├── blobs/<etag>                  file content: sha256 (LFS files) or git blob sha1 (small files)
│       ├── snapshots/<commit>/<path>     relative symlinks to ../../blobs/<etag>
│       └── refs/<revision>               the commit, 40 hex characters, no newline
├── store/<key>/<version>/<path>          s3:// and https:// models, one directory per pinned version
├── ready/<key>                           a relative symlink to the ready model's directory
└── .modelcache/                          the fetchers' own state (never read by apps)
    ├── markers/<key>.json                the ready marker: written last; present and consistent = ready
    ├── locks/<key>.lock                  the per-model lock (fcntl record lock; never deleted)
    ├── owners/<key>.json                 who holds the lock, heartbeat and progress
    ├── staging/<key>/<attempt>/          private downloads; partial files are resumed after a crash
    ├── usage/<key>                       last used: its mtime (touched before every hit check)
    ├── pins/<namespace>.<pod>.json       the version each pod's fetcher pinned for it (its MODEL_PATH)
    ├── outcomes/<time>-<pid>-<key>.json  one record per fetcher run (modelcache.cache.outcomes)
    ├── trash/                            trees being deleted
    └── purge-schedule.json               when the cache agent last purged
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from modelcache.cache.files import list_names, make_shared_dir
from modelcache.contract.errors import IntegrityError
from modelcache.contract.wire import HUB_DIR, READY_DIR

STATE_DIR = ".modelcache"
STORE_DIR = "store"
TRASH_DIR = "trash"
REPO_PREFIX = "models--"
_DIGEST = re.compile(r"[0-9a-f]{64}|[0-9a-f]{40}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True, slots=True)
class HubRepo:
    """One model repository of the huggingface_hub cache under hub/: its blobs, snapshots and refs."""

    path: Path

    @property
    def folder(self) -> str:
        """models--<org>--<name>"""
        return self.path.name

    @property
    def blobs(self) -> Path:
        return self.path / "blobs"

    @property
    def snapshots(self) -> Path:
        return self.path / "snapshots"

    @property
    def refs(self) -> Path:
        return self.path / "refs"

    def blob(self, name: str) -> Path:
        return self.blobs / name

    def snapshot(self, commit: str) -> Path:
        return self.snapshots / commit

    def ref(self, revision: str) -> Path:
        return self.refs / revision

    def tree_listing(self, commit: str) -> Path:
        """huggingface_hub's cached file listing of a commit (a filtered one breaks offline consumers)."""
        return self.path / "trees" / f"{commit}.json"

    def read_ref(self, revision: str) -> str | None:
        """The commit a branch or tag resolved to in this cache, or None."""
        try:
            commit = self.ref(revision).read_text()
        except OSError:
            return None
        return commit if _COMMIT.fullmatch(commit) else None

    def ensure(self) -> None:
        for directory in (self.blobs, self.snapshots, self.refs):
            make_shared_dir(directory)


def repo_folder(repo_id: str) -> str:
    """huggingface_hub's folder name of a model repository: models--<org>--<name>."""
    return REPO_PREFIX + repo_id.replace("/", "--")


def blob_name(sha256: str | None, git_sha1: str | None) -> str:
    """huggingface_hub's blob name: the LFS sha256, or the git blob sha1 of a small file.

    Both come from the remote, so they must look like digests before they become file names.
    """
    name = (sha256 or git_sha1 or "").lower()
    if not _DIGEST.fullmatch(name):
        raise IntegrityError(
            f"the source declares {name[:80]!r} as a file's digest, which is not a sha256 or git sha1; refusing "
            "the model. Check the source."
        )
    return name


class CacheLayout:
    """Paths on the cache volume, for one cache root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hub = root / HUB_DIR
        self.ready_dir = root / READY_DIR
        self.store = root / STORE_DIR
        self.state = root / STATE_DIR
        self.markers = self.state / "markers"
        self.locks = self.state / "locks"
        self.owners = self.state / "owners"
        self.staging = self.state / "staging"
        self.usage = self.state / "usage"
        self.pins = self.state / "pins"
        self.outcomes = self.state / "outcomes"
        self.trash = self.state / TRASH_DIR

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
            self.pins,
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

    def store_dir(self, key: str, version: str) -> Path:
        return self.store / key / version

    def hub_repo(self, repo_id: str) -> HubRepo:
        """The huggingface_hub cache folder of a model repository."""
        return HubRepo(self.hub / repo_folder(repo_id))

    def hub_repos(self) -> list[HubRepo]:
        """Every repository folder under hub/."""
        return [HubRepo(self.hub / name) for name in sorted(list_names(self.hub)) if name.startswith(REPO_PREFIX)]

    def hub_repo_of(self, model_dir: str) -> HubRepo | None:
        """The repository of a model directory given relative to the root (hub/<folder>/snapshots/<commit>)."""
        parts = Path(model_dir).parts
        if len(parts) == 4 and parts[0] == HUB_DIR and parts[1].startswith(REPO_PREFIX) and parts[2] == "snapshots":
            return HubRepo(self.hub / parts[1])
        return None
