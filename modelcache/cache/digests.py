"""The digests that verify a model file: sha256 (LFS files, S3 checksums, ``#sha256=``) and the git blob
sha1 of small Hub files. One implementation for the download (hashed while streaming), ``verify`` and
the repair; sha256 runs at ~1.4 GB/s per core, so hashing while bytes arrive costs no extra pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from modelcache.cache.markers import ModelFile

HASH_CHUNK = 1 << 20


class Digests:
    """The digests a file declares, as far as its bytes have been seen."""

    def __init__(self, file: ModelFile) -> None:
        self.file = file
        self.size = 0
        self._sha256: hashlib._Hash | None = None
        self._git_sha1: hashlib._Hash | None = None
        self.reset()

    def reset(self) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256() if self.file.sha256 else None
        self._git_sha1 = None
        if self.file.git_sha1 and not self.file.sha256:
            self._git_sha1 = hashlib.sha1(f"blob {self.file.size}\0".encode(), usedforsecurity=False)

    def update(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self._sha256 is not None:
            self._sha256.update(chunk)
        if self._git_sha1 is not None:
            self._git_sha1.update(chunk)

    def mismatch(self) -> str | None:
        """What differs from what the file declares (size first), or None when every byte matches."""
        if self.size != self.file.size:
            return f"{self.size} bytes instead of the declared {self.file.size}"
        if self._sha256 is not None and self.file.sha256 and self._sha256.hexdigest() != self.file.sha256.lower():
            return f"sha256 {self._sha256.hexdigest()} instead of the declared {self.file.sha256}"
        if self._git_sha1 is not None and self.file.git_sha1:
            actual = self._git_sha1.hexdigest()
            if actual != self.file.git_sha1.lower():
                return f"git blob sha1 {actual} instead of the declared {self.file.git_sha1}"
        return None


def hash_file(
    path: Path, file: ModelFile, *, progress: Callable[[int], None] | None = None, limit: int | None = None
) -> Digests:
    """The digests of `path`'s bytes (the first `limit` of them, when given) against what `file` declares."""
    digests = Digests(file)
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK if limit is None else min(HASH_CHUNK, limit - digests.size)):
            digests.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digests
