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
import re
import shutil
import time
from pathlib import Path

from fetcher import contract
from fetcher.errors import IntegrityError
from fetcher.layout import (
    SHARED_DIR_MODE,
    CacheLayout,
    Marker,
    ModelFile,
    fsync_dir,
    make_shared_dir,
    symlink_atomically,
    write_atomically,
)
from fetcher.sources import Plan
from fetcher.transfer import staged_path

_TAKEN = (errno.EEXIST, errno.ENOTEMPTY)
_DIGEST = re.compile(r"[0-9a-f]{64}|[0-9a-f]{40}")


def publish_hub(layout: CacheLayout, source: contract.HubSource, plan: Plan, attempt_dir: Path) -> Path:
    """Blobs, then the snapshot, then refs/<revision>; returns the snapshot directory."""
    repo = layout.hub_repo_dir(source.repo_id)
    blobs = repo / "blobs"
    snapshots = repo / "snapshots"
    for directory in (blobs, snapshots, repo / "refs"):
        make_shared_dir(directory)
    for file in plan.files:
        blob = blobs / blob_name(file.sha256, file.git_sha1)
        if not (blob.exists() and blob.stat().st_size == file.size):
            os.replace(staged_path(attempt_dir, file), blob)
    fsync_dir(blobs)
    snapshot = snapshots / plan.version
    if not snapshot.exists():
        building = snapshots / f".{plan.version}.{attempt_dir.name}.tmp"
        shutil.rmtree(building, ignore_errors=True)
        _link_files(building, blobs, plan)
        try:
            os.rename(building, snapshot)  # the whole snapshot appears at once
        except OSError as err:
            if err.errno not in _TAKEN:
                raise
            shutil.rmtree(building, ignore_errors=True)  # another fetcher published it first
    _link_files(snapshot, blobs, plan)  # adds files another include set did not fetch; no-op otherwise
    if not source.pinned:
        ref = repo / "refs" / source.revision
        make_shared_dir(ref.parent)
        write_atomically(ref, plan.version.encode())  # exactly 40 hex characters, no newline
    with contextlib.suppress(FileNotFoundError):
        (repo / "trees" / f"{plan.version}.json").unlink()  # a filtered listing breaks offline consumers
    return snapshot


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


def _link_files(snapshot: Path, blobs: Path, plan: Plan) -> None:
    for file in plan.files:
        link = snapshot / file.path
        target = os.path.relpath(blobs / blob_name(file.sha256, file.git_sha1), link.parent)
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
        files=tuple(ModelFile(f.path, f.size, f.sha256, f.git_sha1) for f in plan.files),
        published_at=time.time(),
        include=include,
    )
    write_atomically(layout.marker_path(key), marker.to_json())
    return marker
