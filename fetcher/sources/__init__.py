"""Source adapters: one module per scheme behind one small Protocol.

Importing this package is cheap; each adapter module imports its library (huggingface_hub, boto3,
urllib3) itself, and fetch.py imports an adapter only after the cache-hit check has failed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Protocol

from fetcher.plan import Plan, RemoteFile


class Source(Protocol):
    """What fetch.py needs from a source."""

    def resolve(self) -> Plan:
        """Pin the source to an immutable version and list its files."""
        ...

    def open(self, file: RemoteFile, offset: int, end: int | None = None) -> tuple[int, Iterator[bytes]]:
        """Stream a file from `offset` (to byte `end`, inclusive, when given); returns the offset actually
        served (0 if Range was ignored: then the whole file comes).

        Raises fetcher.retrying.RetryableError for transient failures, a FetchError for final ones.
        """
        ...

    def close(self) -> None: ...


def matches_include(path: str, patterns: tuple[str, ...]) -> bool:
    """huggingface_hub's allow_patterns rules: fnmatch, '*' crosses '/', a trailing '/' means a folder.

    No patterns means every file.
    """
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(path, p + "*" if p.endswith("/") else p) for p in patterns)
