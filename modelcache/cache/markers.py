"""The ready marker: what was published for a key, where, and every file with its size and digests.

Written last (a temporary file, fsync, rename): until it exists the model is not ready, whatever else
is on the volume. A marker that is present and consistent (ready/<key> points where it says, every file
there with its size) means ready.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from modelcache.cache.layout import CacheLayout
from modelcache.contract.errors import IntegrityError

log = logging.getLogger(__name__)
MARKER_VERSION = 1
_MAX_REMOTE_PATH = 1024


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model: path relative to the model directory, size and the digests that verify it."""

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None

    def entry(self) -> ModelFile:
        """This file as the marker lists it (a subclass's download details dropped)."""
        return ModelFile(self.path, self.size, self.sha256, self.git_sha1)


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


def read_marker(layout: CacheLayout, key: str) -> Marker | None:
    """The marker of a key, or None when there is none or it cannot be read."""
    try:
        raw = layout.marker_path(key).read_bytes()  # open(), not stat(): NFS revalidates on open
    except FileNotFoundError:
        return None
    try:
        marker = Marker.from_json(raw)
    except (ValueError, TypeError, KeyError) as err:
        log.warning("ignoring an unreadable marker for %s: %s", key, err, extra={"model_key": key})
        return None
    return marker if marker.key == key else None


def read_markers(layout: CacheLayout) -> dict[str, Marker]:
    """Every readable marker, by key."""
    markers = {}
    for name in sorted(os.listdir(layout.markers)) if layout.markers.is_dir() else []:
        if name.endswith(".json") and not name.startswith("."):
            marker = read_marker(layout, name.removesuffix(".json"))
            if marker is not None:
                markers[marker.key] = marker
    return markers


def check_ready(layout: CacheLayout, key: str) -> Marker | None:
    """The marker if the model is ready: marker readable, MODEL_PATH link right, every file in place.

    Sizes are checked, not digests: a digest check reads the whole model (`modelcache verify` does).
    """
    marker = read_marker(layout, key)
    if marker is None:
        return None
    problem = find_problem(layout, marker)
    if problem is not None:
        log.warning("%s; fetching again", problem, extra={"model_key": key})
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


def check_remote_path(path: str, *, source: str) -> str:
    """A file path named by a remote (Hub tree, S3 key): relative, inside the model, no tricks."""
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
