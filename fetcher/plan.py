"""What a source resolves to: an immutable version and the files to fetch, with where each one is."""

from __future__ import annotations

from dataclasses import dataclass

from modelcache.cache.markers import ModelFile


@dataclass(frozen=True, slots=True)
class RemoteFile(ModelFile):
    """A model file (path, size, digests) and where to get it: a URL or an S3 key, and its ETag."""

    locator: str = ""
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A resolved source: an immutable version and the files it has (after include filtering)."""

    version: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)
