"""Publishing verified files: every name appears by an atomic rename, the marker last.

hf:// models become a valid huggingface_hub cache (blobs, snapshots, refs) so that offline consumers
find them by repo id and revision. s3:// and https:// models become one immutable directory per
version. Publishing is idempotent: two fetchers publishing the same version at once (a filesystem
whose locks are a no-op) both succeed, and a reader never sees a missing or short file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
from pathlib import Path

from fetcher.plan import Plan
from fetcher.staging import staged_path
from modelcache.cache.files import SHARED_DIR_MODE, fsync_dir, make_shared_dir, symlink_atomically, write_atomically
from modelcache.cache.layout import CacheLayout, HubRepo, blob_name
from modelcache.cache.markers import Marker
from modelcache.contract.sources import HubSource

_TAKEN = (errno.EEXIST, errno.ENOTEMPTY)


def publish_hub(layout: CacheLayout, source: HubSource, plan: Plan, attempt_dir: Path, *, builder: str) -> Path:
    """Blobs, then the snapshot, then refs/<revision>; returns the snapshot directory.

    `builder` names the temporary snapshot: the model key while we hold its lock, so that the next run
    of the key removes what a killed one left; a name of this attempt alone when there is no lock.
    """
    repo = layout.hub_repo(source.repo_id)
    repo.ensure()
    for file in plan.files:
        blob = repo.blob(blob_name(file.sha256, file.git_sha1))
        if not (blob.exists() and blob.stat().st_size == file.size):
            os.replace(staged_path(attempt_dir, file), blob)
    fsync_dir(repo.blobs)
    snapshot = repo.snapshot(plan.version)
    # A temporary snapshot of a run killed mid-build is ours to remove, whether this run builds again or
    # finds the snapshot published meanwhile by another include set.
    building = repo.snapshots / f".{plan.version}.{builder}.tmp"
    shutil.rmtree(building, ignore_errors=True)
    if not snapshot.exists():
        _link_files(building, repo, plan)
        try:
            os.rename(building, snapshot)  # the whole snapshot appears at once
        except OSError as err:
            if err.errno not in _TAKEN:
                raise
            shutil.rmtree(building, ignore_errors=True)  # another fetcher published it first
    _link_files(snapshot, repo, plan)  # adds files another include set did not fetch; no-op otherwise
    if not source.pinned:
        ref = repo.ref(source.revision)
        make_shared_dir(ref.parent)
        write_atomically(ref, plan.version.encode())  # exactly 40 hex characters, no newline
    with contextlib.suppress(FileNotFoundError):
        repo.tree_listing(plan.version).unlink()  # a filtered listing breaks offline consumers
    return snapshot


def _link_files(snapshot: Path, repo: HubRepo, plan: Plan) -> None:
    for file in plan.files:
        link = snapshot / file.path
        target = os.path.relpath(repo.blob(blob_name(file.sha256, file.git_sha1)), link.parent)
        with contextlib.suppress(OSError):
            if os.readlink(link) == target:
                continue
        make_shared_dir(link.parent)
        symlink_atomically(target, link)


def publish_store(layout: CacheLayout, key: str, plan: Plan, attempt_dir: Path) -> Path:
    """The verified files as one immutable directory store/<key>/<version>; returns it."""
    final = layout.store_dir(key, plan.version)
    make_shared_dir(final.parent)
    if final.exists():
        return final  # only ever created by a rename of a complete, verified tree
    data = attempt_dir / "data"
    for directory, _, _ in os.walk(data):
        if stat.S_IMODE(os.stat(directory).st_mode) != SHARED_DIR_MODE:  # made by make_shared_dir, maybe by another UID
            os.chmod(directory, SHARED_DIR_MODE)
    try:
        os.rename(data, final)
    except OSError as err:
        if err.errno not in _TAKEN:
            raise
    fsync_dir(final.parent)
    return final


def publish_ready(
    layout: CacheLayout, *, key: str, source: str, include: tuple[str, ...], plan: Plan, model_dir: Path
) -> Marker:
    """Point MODEL_PATH at the model, then write the marker: from now on the model is ready."""
    symlink_atomically(os.path.relpath(model_dir, layout.ready_dir), layout.ready_link(key))
    fsync_dir(layout.ready_dir)
    marker = Marker(
        key=key,
        source=source,
        version=plan.version,
        path=str(model_dir.relative_to(layout.root)),
        files=tuple(f.entry() for f in plan.files),
        published_at=time.time(),
        include=include,
    )
    write_atomically(layout.marker_path(key), marker.to_json())
    return marker
