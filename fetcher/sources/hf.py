"""hf:// models: huggingface_hub's HTTP API resolves and lists; our HTTP client downloads the bytes.

huggingface_hub 2.x is used for what it does well: the API calls (revision -> commit, the recursive
tree with sizes, git blob ids and LFS sha256) and its error types. The bytes go through our own
client, because we need what snapshot_download does not do: private staging, resume of a partial file
after a crash, and sha256 verification while streaming.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import httpx2
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile

from fetcher.http_client import HttpClient, parse_retry_after
from fetcher.plan import Plan, RemoteFile
from fetcher.retrying import RetryableError
from fetcher.sources import matches_include
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_remote_path
from modelcache.contract.annotation import INCLUDE_ANNOTATION
from modelcache.contract.errors import AccessDeniedError, NotFoundError, TransferError
from modelcache.contract.sources import HubSource

log = logging.getLogger(__name__)
DEFAULT_ENDPOINT = "https://huggingface.co"
_COMMIT = re.compile(r"[0-9a-f]{40}")
T = TypeVar("T")


class HubAdapter:
    def __init__(
        self,
        source: HubSource,
        *,
        include: tuple[str, ...],
        layout: CacheLayout,
        refresh: bool,
        environ: Mapping[str, str],
        http: HttpClient,
        secret_hint: str,
    ) -> None:
        self.source = source
        self.include = include
        self.layout = layout
        self.refresh = refresh
        self.http = http
        self.secret_hint = secret_hint
        self.endpoint = (environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.token = environ.get("HF_TOKEN") or None
        self.api = HfApi(endpoint=self.endpoint, token=self.token or False, library_name="modelcache")

    def resolve(self) -> Plan:
        commit = self._commit()
        repo = self.source.repo_id
        entries = self._call(
            lambda: list(self.api.list_repo_tree(repo, revision=commit, recursive=True)),
            f"listing the files of {repo} at {commit} on {self.endpoint}",
        )
        available: list[str] = []
        files: list[RemoteFile] = []
        for entry in entries:
            if not isinstance(entry, RepoFile):
                continue
            path = check_remote_path(entry.path, source=f"hf://{repo}@{commit}")
            available.append(path)
            if not matches_include(path, self.include):
                continue
            files.append(
                RemoteFile(
                    path=path,
                    size=entry.size,
                    sha256=entry.lfs.sha256 if entry.lfs else None,
                    git_sha1=None if entry.lfs else entry.blob_id,
                    locator=hf_hub_url(repo, path, revision=commit, endpoint=self.endpoint),
                )
            )
        if not files:
            shown = ", ".join(sorted(available)[:20]) or "no files at all"
            raise NotFoundError(
                f"no file of hf://{repo}@{commit} matches {INCLUDE_ANNOTATION}="
                f"{','.join(self.include)!r}; the repository has: {shown}. Fix the include patterns."
            )
        return Plan(version=commit, files=tuple(files))

    def open(self, file: RemoteFile, offset: int, end: int | None = None) -> tuple[int, Iterator[bytes]]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        denied = (
            f"check the token in {self.secret_hint}, key HF_TOKEN"
            if self.token
            else (f"put a Hub token in {self.secret_hint}, key HF_TOKEN")
        )
        what = f"{self.source.repo_id}/{file.path} from {self.endpoint}"
        return self.http.get(file.locator, headers=headers, offset=offset, end=end, what=what, denied=denied)

    def close(self) -> None:
        self.http.close()

    def _commit(self) -> str:
        """The commit to fetch: pinned, or already resolved in the cache (no drift), or asked of the Hub."""
        if self.source.pinned:
            return self.source.revision
        if not self.refresh:
            cached = self.layout.hub_repo(self.source.repo_id).read_ref(self.source.revision)
            if cached is not None:
                log.info(
                    "%s was resolved to %s in this cache before; using that commit (no drift between pods). "
                    "MODELCACHE_REFRESH=true re-resolves it.",
                    self.source.uri,
                    cached,
                )
                return cached
        info = self._call(
            lambda: self.api.model_info(self.source.repo_id, revision=self.source.revision),
            f"resolving {self.source.uri} at {self.endpoint}",
        )
        if not info.sha or not _COMMIT.fullmatch(info.sha):
            raise TransferError(f"the Hub at {self.endpoint} resolved {self.source.uri} to {info.sha!r}, not a commit")
        log.info("resolved %s to commit %s", self.source.uri, info.sha)
        return info.sha

    def _call(self, call: Callable[[], T], what: str) -> T:
        """An API call, its errors turned into ours: transient ones become RetryableError (fetch.py retries)."""
        try:
            return call()
        except GatedRepoError as err:
            raise AccessDeniedError(
                f"{self.source.repo_id} is gated: accept its terms on the Hub with an account, and put a token "
                f"of that account in {self.secret_hint}, key HF_TOKEN"
                + (" (the token given was refused)" if self.token else "")
            ) from err
        except RevisionNotFoundError as err:
            raise NotFoundError(
                f"revision {self.source.revision!r} of {self.source.repo_id} does not exist on {self.endpoint}; "
                "check the branch, tag or commit after '@'"
            ) from err
        except RepositoryNotFoundError as err:
            raise (AccessDeniedError if self.token else NotFoundError)(
                f"{self.source.repo_id} was not found on {self.endpoint}. "
                + (
                    "The token in HF_TOKEN was sent: check that it can read this repository."
                    if self.token
                    else f"If it is private or gated, put a Hub token in {self.secret_hint}, key HF_TOKEN; "
                    "otherwise check the name."
                )
            ) from err
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            if status in (401, 403):
                raise AccessDeniedError(
                    f"the Hub refused {what} (HTTP {status}); check the token in {self.secret_hint}, key HF_TOKEN"
                ) from err
            if status not in (408, 429) and status < 500:
                raise TransferError(f"{what} failed: HTTP {status}") from err
            raise RetryableError(f"{what}: HTTP {status}", retry_after=parse_retry_after(err.response.headers)) from err
        except httpx2.TransportError as err:
            raise RetryableError(f"{what}: {type(err).__name__}: {err}") from err
