"""A local server that speaks the Hugging Face Hub's HTTP protocol, for tests, the demo and benchmarks.

What huggingface_hub 2.x and our fetcher use, and how the Hub answers it:

- ``GET /api/models/{repo}[/revision/{rev}]``: ``{"id", "sha", "siblings"}``; unknown repo or revision:
  404 with ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound``; gated without a token: 401 ``GatedRepo``.
- ``GET /api/models/{repo}/tree/{rev}?recursive=true``: entries with size, git oid and ``lfs.oid``
  (sha256), paginated with ``Link: <...>; rel="next"``.
- ``POST /api/models/{repo}/paths-info/{rev}``: the same entries for the paths asked.
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: small files directly, with ``X-Repo-Commit``, ``ETag`` (git sha1),
  ``Content-Length`` and ``Accept-Ranges``; LFS files redirect (302) to a second origin, the "CDN", with
  ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``. Range requests get 206.

Fault knobs for tests: throttling (to SIGKILL a download midway), connections closed at random, statuses
to answer next (429 with Retry-After, 503), a corrupted byte, a wrong declared digest, and ignoring Range
(otherwise ranges are answered as RFC 9110 says: `bytes=A-B`, `bytes=A-`, suffixes, 416 past the end).
The server counts the content bytes it sends and the bodies it streams at once, so tests can assert
that 8 pods downloaded a model once, or that one file came over several streams. It binds only to
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from devtools.background import BackgroundLoop

CHUNK = 1 << 20
PAGE_SIZE = 50


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class HubFile:
    """A file of a commit: content in memory, or on disk for large benchmark files."""

    path: str
    data: bytes | None = None
    disk: Path | None = None
    lfs: bool = False
    _sha256: str | None = None
    _git: str | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self._disk().stat().st_size

    def _disk(self) -> Path:
        if self.disk is None:
            raise ValueError(f"{self.path} has no content")
        return self.disk

    def chunks(self, start: int) -> Iterator[bytes]:
        if self.data is not None:
            for offset in range(start, len(self.data), CHUNK):
                yield self.data[offset : offset + CHUNK]
            return
        with self._disk().open("rb") as source:
            source.seek(start)
            while chunk := source.read(CHUNK):
                yield chunk

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256()
            for chunk in self.chunks(0):
                digest.update(chunk)
            self._sha256 = digest.hexdigest()
        return self._sha256

    @property
    def git_sha1(self) -> str:
        if self._git is None:
            digest = hashlib.sha1(b"blob %d\0" % self.size, usedforsecurity=False)
            for chunk in self.chunks(0):
                digest.update(chunk)
            self._git = digest.hexdigest()
        return self._git


@dataclass
class HubRepo:
    """A model repository: commits (sha -> files) and refs (branch/tag -> sha)."""

    repo_id: str
    commits: dict[str, dict[str, HubFile]]
    refs: dict[str, str]
    gated: bool = False
    private: bool = False

    @classmethod
    def single(
        cls, repo_id: str, files: Mapping[str, bytes | Path], *, lfs_min_size: int = 1024, **flags: bool
    ) -> HubRepo:
        """One commit on main; files of lfs_min_size bytes or more are LFS files, as on the Hub."""
        hub_files = {}
        for path, content in files.items():
            item = HubFile(path, data=content) if isinstance(content, bytes) else HubFile(path, disk=content)
            item.lfs = item.size >= lfs_min_size
            hub_files[path] = item
        commit = commit_id(repo_id, hub_files)
        return cls(repo_id, {commit: hub_files}, {"main": commit}, **flags)

    def add_commit(self, files: dict[str, bytes], *, ref: str = "main", lfs_min_size: int = 1024) -> str:
        hub_files = {p: HubFile(p, data=d, lfs=len(d) >= lfs_min_size) for p, d in files.items()}
        commit = commit_id(self.repo_id, hub_files)
        self.commits[commit] = hub_files
        self.refs[ref] = commit
        return commit

    @property
    def main(self) -> str:
        return self.refs["main"]


def commit_id(repo_id: str, files: dict[str, HubFile]) -> str:
    digest = hashlib.sha1(repo_id.encode(), usedforsecurity=False)
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path].git_sha1.encode())
    return digest.hexdigest()


@dataclass
class Faults:
    """Knobs tests turn; read by the server on every request."""

    bytes_per_second: float | None = None  # throttle file bodies
    next_statuses: list[int] = field(default_factory=list)  # answer file GETs with these first
    retry_after: int = 1
    corrupt: set[str] = field(default_factory=set)  # flip one byte of these paths' content
    wrong_digest: set[str] = field(default_factory=set)  # declare a wrong sha256 / oid for these
    ignore_range: bool = False
    cut_next_after: int | None = None  # the next file body stops after this many bytes (connection closed)
    listed_twice: set[str] = field(default_factory=set)  # a broken mirror: these paths appear twice in the tree
    drop_probability: float = 0.0  # each piece of a file body: the connection is closed with this chance
    drop_seed: int = 0


class HubServer:
    """The Hub and its CDN on two loopback ports, served from a background thread."""

    def __init__(self, repos: list[HubRepo], *, token: str | None = None) -> None:
        self.repos = {r.repo_id: r for r in repos}
        self.token = token
        self.faults = Faults()
        self.bytes_served = 0
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, had Authorization)
        self.ranges: list[str] = []  # the Range header of every file body GET ("" without one)
        self.streaming = 0  # file bodies being sent now
        self.max_streaming = 0  # the most at once
        self._lock = threading.Lock()
        self._dice = random.Random(self.faults.drop_seed)
        self._background: BackgroundLoop | None = None
        self._runners: list[web.AppRunner] = []
        self.url = ""
        self.cdn_url = ""

    # --- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> HubServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self._background = BackgroundLoop("hub-server")
        self._background.run(self._start())

    def stop(self) -> None:
        if self._background is None:
            return
        self._background.run(self._stop())
        self._background.close()
        self._background = None

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_served = 0
            self.requests.clear()
            self.ranges.clear()
            self.max_streaming = 0

    async def _start(self) -> None:
        hub = web.Application()
        hub.router.add_get("/api/models/{org}/{name}", self._model_info)
        hub.router.add_get("/api/models/{org}/{name}/revision/{rev:.+}", self._model_info)
        hub.router.add_get("/api/models/{org}/{name}/tree/{rev}", self._tree)
        hub.router.add_get("/api/models/{org}/{name}/tree/{rev}/{path:.*}", self._tree)
        hub.router.add_post("/api/models/{org}/{name}/paths-info/{rev}", self._paths_info)
        hub.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        cdn = web.Application()
        cdn.router.add_route("*", "/cdn/{repo}/{commit}/{path:.+}", self._cdn)
        for app in (hub, cdn):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self._runners.append(runner)
        self.url = f"http://127.0.0.1:{self._runners[0].addresses[0][1]}"
        self.cdn_url = f"http://127.0.0.1:{self._runners[1].addresses[0][1]}"

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    # --- API ------------------------------------------------------------------------------------------
    def _record(self, request: web.Request) -> None:
        with self._lock:
            self.requests.append((request.method, request.path, "Authorization" in request.headers))

    def _find(self, request: web.Request, rev: str | None) -> tuple[HubRepo, str]:
        self._record(request)
        repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
        repo = self.repos.get(repo_id)
        authorized = self.token is not None and request.headers.get("Authorization") == f"Bearer {self.token}"
        if repo is None or (repo.private and not authorized):
            raise _error(
                401 if repo is not None or "Authorization" not in request.headers else 404,
                "RepoNotFound",
                f"Repository Not Found for url: {request.url}.",
            )
        if repo.gated and not authorized:
            raise _error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to it.")
        rev = urllib.parse.unquote(rev or "main")
        commit = rev if rev in repo.commits else repo.refs.get(rev)
        if commit is None:
            raise _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, commit

    async def _model_info(self, request: web.Request) -> web.Response:
        repo, commit = self._find(request, request.match_info.get("rev"))
        siblings = [{"rfilename": p} for p in sorted(repo.commits[commit])]
        return web.json_response(
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit,
                "siblings": siblings,
                "private": repo.private,
                "gated": repo.gated,
            }
        )

    def _entry(self, item: HubFile) -> dict[str, object]:
        wrong = item.path in self.faults.wrong_digest
        entry: dict[str, object] = {
            "type": "file",
            "path": item.path,
            "size": item.size,
            "oid": ("0" * 40) if wrong and not item.lfs else item.git_sha1,
        }
        if item.lfs:
            entry["lfs"] = {"oid": ("0" * 64) if wrong else item.sha256, "size": item.size, "pointerSize": 134}
        return entry

    async def _tree(self, request: web.Request) -> web.Response:
        repo, commit = self._find(request, request.match_info["rev"])
        under = request.match_info.get("path", "").strip("/")
        paths = [p for p in sorted(repo.commits[commit]) if not under or p.startswith(under + "/")]
        files = [repo.commits[commit][p] for p in paths]
        entries: list[dict[str, object]] = []
        folders = sorted({p.rsplit("/", 1)[0] for p in paths if "/" in p})
        entries += [{"type": "directory", "path": f, "size": 0, "oid": "0" * 40} for f in folders]
        entries += [self._entry(f) for f in files]
        entries += [self._entry(f) for f in files if f.path in self.faults.listed_twice]
        start = int(request.query.get("cursor", "0"))
        page = entries[start : start + PAGE_SIZE]
        response = web.json_response(page)
        if start + PAGE_SIZE < len(entries):
            query = dict(request.query, cursor=str(start + PAGE_SIZE))
            response.headers["Link"] = f'<{request.url.with_query(query)}>; rel="next"'
        return response

    async def _paths_info(self, request: web.Request) -> web.Response:
        repo, commit = self._find(request, request.match_info["rev"])
        form = await request.post()
        wanted = [str(p) for p in form.getall("paths", [])]
        files = repo.commits[commit]
        return web.json_response([self._entry(files[p]) for p in wanted if p in files])

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        repo, commit = self._find(request, request.match_info["rev"])
        path = request.match_info["path"]
        item = repo.commits[commit].get(path)
        if item is None:
            raise _error(404, "EntryNotFound", f"{path} does not exist", commit=commit)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{item.git_sha1}"', "Accept-Ranges": "bytes"}
        if item.lfs:
            headers.update(
                {
                    "X-Linked-Etag": f'"{item.sha256}"',
                    "X-Linked-Size": str(item.size),
                    "Location": f"{self.cdn_url}/cdn/{repo.repo_id.replace('/', '--')}/{commit}/{path}?sig=x",
                }
            )
            return web.Response(status=302, headers=headers)
        return await self._send(request, repo, item, headers)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        repo = self.repos[request.match_info["repo"].replace("--", "/", 1)]
        item = repo.commits[request.match_info["commit"]][request.match_info["path"]]
        return await self._send(request, repo, item, {"ETag": f'"{item.sha256}"', "Accept-Ranges": "bytes"})

    async def _send(
        self, request: web.Request, repo: HubRepo, item: HubFile, headers: dict[str, str]
    ) -> web.StreamResponse:
        if request.method == "GET" and self.faults.next_statuses:
            status = self.faults.next_statuses.pop(0)
            return web.Response(status=status, headers={"Retry-After": str(self.faults.retry_after)})
        size = item.size
        if request.method == "HEAD":
            return web.Response(status=200, headers={**headers, "Content-Length": str(size)})
        wanted = None if self.faults.ignore_range else byte_range(request.headers.get("Range"), size)
        if wanted == "unsatisfiable":
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        start, end = wanted if isinstance(wanted, tuple) else (0, size - 1)
        response = web.StreamResponse(status=206 if wanted else 200, headers=headers)
        response.content_length = end - start + 1
        if wanted:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        with self._lock:
            self.ranges.append(request.headers.get("Range", ""))
            self.streaming += 1
            self.max_streaming = max(self.max_streaming, self.streaming)
        try:
            return await self._body(request, response, item, start, end)
        finally:
            with self._lock:
                self.streaming -= 1

    async def _body(
        self, request: web.Request, response: web.StreamResponse, item: HubFile, start: int, end: int
    ) -> web.StreamResponse:
        size = item.size
        await response.prepare(request)
        sent = 0
        began = time.monotonic()
        position = start
        rate = self.faults.bytes_per_second
        piece = max(1024, int(rate / 20)) if rate else CHUNK  # throttled: ~20 writes a second
        for whole in item.chunks(start):
            block = whole[: end + 1 - position]
            if not block:
                break
            if item.path in self.faults.corrupt and position <= size // 2 < position + len(block):
                middle = size // 2 - position
                block = block[:middle] + bytes([block[middle] ^ 0xFF]) + block[middle + 1 :]
            for offset in range(0, len(block), piece):
                chunk = block[offset : offset + piece]
                dropped = bool(self.faults.drop_probability) and self._dice.random() < self.faults.drop_probability
                cut = sent + len(chunk) // 2 if dropped else self.faults.cut_next_after  # a drop: halfway through
                if cut is not None and sent + len(chunk) > cut:
                    if not dropped:
                        self.faults.cut_next_after = None
                    await response.write(chunk[: cut - sent])
                    with self._lock:
                        self.bytes_served += cut - sent
                    if request.transport is not None:
                        request.transport.close()  # the body ends early, as when a connection drops
                    return response
                await response.write(chunk)
                position += len(chunk)
                sent += len(chunk)
                with self._lock:
                    self.bytes_served += len(chunk)
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        await response.write_eof()
        return response


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """RFC 9110 14.1.2: (first, last) of one byte range; "unsatisfiable" (416); None to serve the whole file.

    A header the server may ignore (absent, another unit, several ranges, bad syntax, last < first) is
    ignored, as the RFC allows; a range that starts past the end, or an empty suffix, is unsatisfiable.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_text, dash, last_text = header.removeprefix("bytes=").strip().partition("-")
    if not dash or not (first_text + last_text).isdigit() or not (first_text.isdigit() or last_text.isdigit()):
        return None
    if not first_text:  # a suffix: the last N bytes
        length = int(last_text)
        return (max(0, size - length), size - 1) if length and size else "unsatisfiable"
    first = int(first_text)
    last = int(last_text) if last_text else max(first, size - 1)
    if last < first:
        return None
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


def _error(status: int, code: str, message: str, *, commit: str | None = None) -> web.HTTPException:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    if commit:
        headers["X-Repo-Commit"] = commit
    kind = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden}.get(status, web.HTTPNotFound)
    return kind(headers=headers, text=f'{{"error": "{message}"}}', content_type="application/json")
