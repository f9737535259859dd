"""Source adapters: one module per scheme behind one small Protocol.

Importing this package is cheap; each adapter module imports its library (huggingface_hub, boto3,
urllib3) itself, and fetch.py imports an adapter only after the cache-hit check has failed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file to download: its path in the model, size, digests to verify, and where it is."""

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None
    locator: str = ""  # a URL, or an S3 key
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A resolved source: an immutable version and the files it has (after include filtering)."""

    version: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class Source(Protocol):
    """What fetch.py needs from a source."""

    def resolve(self) -> Plan:
        """Pin the source to an immutable version and list its files."""
        ...

    def open(self, file: RemoteFile, offset: int) -> tuple[int, Iterator[bytes]]:
        """Stream a file from `offset`; returns the offset actually served (0 if Range was ignored).

        Raises RetryableError for transient failures, a FetchError for final ones.
        """
        ...

    def close(self) -> None: ...


class RetryableError(Exception):
    """A transient failure (connection, timeout, 429, 5xx); `retry_after` in seconds when the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def matches_include(path: str, patterns: tuple[str, ...]) -> bool:
    """huggingface_hub's allow_patterns rules: fnmatch, '*' crosses '/', a trailing '/' means a folder.

    No patterns means every file.
    """
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(path, p + "*" if p.endswith("/") else p) for p in patterns)
