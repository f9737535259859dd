"""What a source resolves to: an immutable version and the files to fetch, with where each one is."""

from __future__ import annotations

from dataclasses import dataclass

from modelcache.cache.markers import ModelFile
from modelcache.contract.errors import IntegrityError


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


def check_listing(plan: Plan, *, source: str) -> Plan:
    """Refuse a listing no directory can hold: a path twice, or a path that is both a file and a directory.

    Checked at resolve, before anything is staged: two workers would otherwise share one partial file,
    or one would find a directory where its file goes.
    """
    seen: set[str] = set()
    for file in plan.files:
        if file.path in seen:
            raise IntegrityError(
                f"{source} lists {file.path!r} twice; refusing the whole model, nothing was downloaded. Check the "
                "source (a broken mirror or listing)."
            )
        seen.add(file.path)
    for path in sorted(seen):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in seen:
                raise IntegrityError(
                    f"{source} lists both a file {parent!r} and a file {path!r} inside it: no directory can hold "
                    "both; refusing the whole model, nothing was downloaded. Check the source."
                )
    return plan
