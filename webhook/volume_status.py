"""The controller's volume status, the cache PVCs and the CachedModels, kept current in memory by list + watch.

Informers for one ConfigMap, for the PVCs that carry the cache's claim name, and for the CachedModel
objects (which say where each model is Ready, for the scheduling gate), on the aiohttp client
the webhook already has (a Kubernetes client library would double the webhook's memory). The admission
hot path only reads what they hold; it never waits on the API. Credentials are the pod's service
account (the token file is re-read on every request, since projected tokens rotate), or given in
settings when the webhook runs outside the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from modelcache.contract import cachedmodel
from modelcache.contract.volumes import STATUS_KEY, VolumeDeniedError, VolumeStatus, unusable_claim
from webhook.config import Settings
from webhook.errors import DenialError

log = logging.getLogger(__name__)
WATCH_SECONDS = 300
ABSENT_RETRY_SECONDS = 60  # an optional resource the cluster does not serve (the CachedModel CRD not applied)
_RETRY_SECONDS = (1, 2, 5, 10)


@dataclass(frozen=True, slots=True)
class ClaimView:
    """A cache PVC as the webhook's own watch sees it."""

    access_modes: tuple[str, ...]
    phase: str
    deleting: bool

    @classmethod
    def of(cls, pvc: dict[str, Any]) -> ClaimView:
        metadata, spec = pvc.get("metadata") or {}, pvc.get("spec") or {}
        return cls(
            access_modes=tuple(spec.get("accessModes") or ()),
            phase=str((pvc.get("status") or {}).get("phase") or "Pending"),
            deleting=bool(metadata.get("deletionTimestamp")),
        )


class VolumeStatusWatcher:
    """Holds the newest VolumeStatus and the webhook's own view of the cache PVCs; `run` keeps both current.

    The PVC view closes the window between an operator creating a PVC (``existing`` volumes) and the
    controller's next report: a pod created in that window is decided by the PVC the webhook saw, not
    denied for a PVC "missing" that exists.
    """

    def __init__(self, settings: Settings) -> None:
        self.namespace, _, self.name = settings.volume_status.partition("/")
        self.api_url = settings.kube_api_url
        self.token_file = Path(settings.kube_token_file)
        self.ca_file = settings.kube_ca_file
        self.status: VolumeStatus | None = None
        self.synced = False  # the first list succeeded: until then, the webhook is not ready
        self.claims: dict[str, ClaimView] = {}  # namespace -> its PVC named claims_of
        self.claims_of = ""  # the claim name the PVC view lists ("" until its first list)
        self.claims_problem = "the webhook is still listing them"
        # model key -> the cache volumes ("namespace/pvc") where it is Ready, from the CachedModel objects
        self.ready_in: dict[str, frozenset[str]] = {}
        self._status_changed = asyncio.Event()

    def claim_for(self, namespace: str) -> str:
        """The PVC to mount for a pod in `namespace`, or DenialError saying what to configure."""
        status = self.status
        if status is None:
            raise DenialError(
                f"modelcache: the modelcache controller has not published the cache volume status (ConfigMap "
                f"{self.namespace}/{self.name}) yet, so no cache volume can be promised to namespace {namespace}. "
                f"Check the modelcache-controller pods in namespace {self.namespace}."
            )
        unreported = status.mode == "existing" and namespace not in status.namespaces and not status.problem
        if unreported and status.node_local == "fallback":
            with contextlib.suppress(DenialError):  # an operator's RWX PVC first; node-local without one
                return self._seen_claim(status, namespace, VolumeDeniedError("not reported yet"))
        try:
            return status.claim_for(namespace, now=datetime.now(UTC))
        except VolumeDeniedError as err:
            if unreported and status.node_local == "off":
                return self._seen_claim(status, namespace, err)
            raise DenialError(str(err)) from err

    def _seen_claim(self, status: VolumeStatus, namespace: str, missing: VolumeDeniedError) -> str:
        """Not in the controller's report yet: decide by the PVC this webhook sees, if it sees them."""
        if self.claims_of != status.claim:
            raise DenialError(
                f"modelcache: the cache volume of namespace {namespace} is not known yet: the modelcache "
                f"controller has not reported it, and the webhook cannot see its PersistentVolumeClaims "
                f"({self.claims_problem}). Retry in a few seconds; if it lasts, check the modelcache-controller "
                f"and modelcache-webhook pods in namespace {status.controller_namespace}."
            ) from missing
        claim = self.claims.get(namespace)
        if claim is None:
            raise DenialError(str(missing)) from missing
        where = f"{namespace}/{status.claim}"
        problem = unusable_claim(
            where, access_modes=claim.access_modes, phase=claim.phase, deleting=claim.deleting, managed=False
        )
        if problem:
            raise DenialError(f"modelcache: no usable cache volume in namespace {namespace}: {problem}") from missing
        return status.claim  # Bound, or being bound: the pod waits for it as for a pending PVC

    def model_ready(self, namespace: str, key: str) -> bool | None:
        """Whether the model is Ready in the cache volume of `namespace` (False when not known); None when
        that cache is node-local: a model is ready per node, and an unscheduled pod has none."""
        status = self.status
        if status is None:
            return False
        if status.is_node_local(namespace):
            return None
        home = status.controller_namespace if status.mode == "clone" else namespace
        return cachedmodel.volume_id(home, status.claim) in self.ready_in.get(key, frozenset())

    async def run(self) -> None:
        feeds = (self._status_feed(), self._claims_feed(), self._models_feed())
        await asyncio.gather(*(self._follow(feed) for feed in feeds))

    def _models_feed(self) -> _Feed:
        """Every CachedModel: which volumes hold each model Ready. Without the CRD, every wait is for a
        fetch Job (the controller removes the gate when it succeeds)."""
        names: dict[str, str] = {}  # object name -> model key, to forget a deleted object's key

        def ready_volumes(obj: dict[str, Any]) -> tuple[str, frozenset[str]]:
            status = obj.get("status") or {}
            entries = [e for e in status.get("caches") or [] if isinstance(e, dict) and e.get("phase") == "Ready"]
            return str(status.get("key") or ""), frozenset(str(e.get("volume")) for e in entries)

        def reset(items: list[dict[str, Any]]) -> None:
            names.clear()  # a fresh list replaces everything
            fresh: dict[str, frozenset[str]] = {}
            for obj in items:
                key, volumes = ready_volumes(obj)
                if key:
                    fresh[key] = volumes
                    names[str(obj["metadata"]["name"])] = key
            self.ready_in = fresh

        def apply(kind: str, obj: dict[str, Any]) -> None:
            name = str(obj.get("metadata", {}).get("name", ""))
            key, volumes = ready_volumes(obj)
            old = names.pop(name, "")
            if old:  # the admission handlers run on this same event loop: changing it in place is safe
                self.ready_in.pop(old, None)
            if kind != "DELETED" and key:
                names[name] = key
                self.ready_in[key] = volumes

        return _Feed(
            what="CachedModels",
            path=f"/apis/{cachedmodel.API_VERSION}/{cachedmodel.PLURAL}",
            selector=lambda: "",
            reset=reset,
            apply=apply,
            absent_ok=True,
        )

    async def _follow(self, feed: _Feed) -> None:
        """List, then watch from that version, for as long as the app runs; back off on errors."""
        attempt = 0
        while True:
            try:
                while not feed.ready():  # the PVC view waits for the status, which names the claim
                    self._status_changed.clear()
                    if not feed.ready():
                        await self._status_changed.wait()
                async with self._session() as session:
                    version = await self._list(session, feed)
                    attempt = 0
                    while version and feed.ready():
                        version = await self._watch(session, feed, version)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
                delay = _RETRY_SECONDS[min(attempt, len(_RETRY_SECONDS) - 1)]
                attempt += 1
                feed.failed(err)
                if feed.absent_ok and isinstance(err, aiohttp.ClientResponseError) and err.status == 404:
                    if attempt == 1:
                        log.info(
                            "%s: not served by this cluster (%s); looking again every minute", feed.what, feed.path
                        )
                    await asyncio.sleep(ABSENT_RETRY_SECONDS)
                    continue
                log.warning("%s: %s; retrying in %d s (keeping the last known state)", feed.what, err, delay)
                await asyncio.sleep(delay)

    def _status_feed(self) -> _Feed:
        def reset(items: list[dict[str, Any]]) -> None:
            self._update(items[0] if items else None)
            self.synced = True

        def apply(kind: str, obj: dict[str, Any]) -> None:
            self._update(obj if kind in ("ADDED", "MODIFIED") else None)

        return _Feed(
            what="volume status",
            path=f"/api/v1/namespaces/{self.namespace}/configmaps",
            selector=lambda: f"metadata.name={self.name}",
            reset=reset,
            apply=apply,
        )

    def _claims_feed(self) -> _Feed:
        """The PVCs named as the status's claim, in every namespace: for ``existing`` volumes."""
        listing = {"claim": "", "asked": ""}  # the claim name listed and watched; the one being listed

        def claim() -> str:
            return self.status.claim if self.status is not None else ""

        def reset(items: list[dict[str, Any]]) -> None:
            self.claims = {str(i["metadata"]["namespace"]): ClaimView.of(i) for i in items}
            self.claims_of = listing["claim"] = listing["asked"]

        def apply(kind: str, obj: dict[str, Any]) -> None:
            namespace = str(obj.get("metadata", {}).get("namespace", ""))
            if kind == "DELETED":
                self.claims.pop(namespace, None)
            elif kind in ("ADDED", "MODIFIED"):
                self.claims[namespace] = ClaimView.of(obj)

        def failed(err: Exception) -> None:
            self.claims_of = ""
            self.claims_problem = f"{type(err).__name__}: {str(err)[:200]}"

        def ready() -> bool:  # a new claim name in the status: list again for it
            wanted = claim()
            return bool(wanted) and listing["claim"] in ("", wanted)

        def selector() -> str:
            listing["claim"], listing["asked"] = "", claim()
            return f"metadata.name={listing['asked']}"

        return _Feed(
            what="cache PVCs",
            path="/api/v1/persistentvolumeclaims",
            selector=selector,
            reset=reset,
            apply=apply,
            failed=failed,
            ready=ready,
        )

    def _session(self) -> aiohttp.ClientSession:
        context: ssl.SSLContext | bool = False
        if self.api_url.startswith("https://"):
            context = ssl.create_default_context(cafile=self.ca_file if os.path.exists(self.ca_file) else None)
        return aiohttp.ClientSession(
            base_url=self.api_url,
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=WATCH_SECONDS + 30),
        )

    def _headers(self) -> dict[str, str]:
        """Read the token for each request: projected service account tokens are rotated by the kubelet."""
        token = self.token_file.read_text().strip() if self.token_file.exists() else ""
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _list(self, session: aiohttp.ClientSession, feed: _Feed) -> str:
        selector = feed.selector()
        async with session.get(feed.path, params={"fieldSelector": selector}, headers=self._headers()) as response:
            document = await _json(response)
        feed.selector_listed = selector
        feed.reset(document.get("items") or [])
        return str(document["metadata"]["resourceVersion"])

    async def _watch(self, session: aiohttp.ClientSession, feed: _Feed, version: str) -> str:
        """One watch call; the version to continue from, or "" to list again (410 Gone)."""
        params = {
            "fieldSelector": feed.selector_listed,
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async with session.get(feed.path, params=params, headers=self._headers()) as response:
            if response.status != 200:
                await _json(response)
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        return ""
                    raise ValueError(f"watch error: {obj.get('message')}")
                version = str(obj.get("metadata", {}).get("resourceVersion", version))
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    feed.apply(str(event["type"]), obj)
                if not feed.ready():
                    return ""  # what to watch changed: list again
        return version

    def _update(self, configmap: dict[str, Any] | None) -> None:
        self._status_changed.set()
        if configmap is None:
            self.status = None
            return
        text = (configmap.get("data") or {}).get(STATUS_KEY, "")
        try:
            self.status = VolumeStatus.from_json(text)
        except ValueError as err:
            log.error("volume status in %s/%s is unreadable: %s", self.namespace, self.name, err)
            self.status = None


@dataclass
class _Feed:
    """One list + watch: what to ask, and what to do with the answers."""

    what: str
    path: str
    selector: Callable[[], str]
    reset: Callable[[list[dict[str, Any]]], None]
    apply: Callable[[str, dict[str, Any]], None]
    failed: Callable[[Exception], None] = lambda _: None
    ready: Callable[[], bool] = lambda: True
    selector_listed: str = ""
    absent_ok: bool = False  # a 404 means the resource is not installed: say so once, look again slowly


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    if response.status != 200:
        body = await response.text()
        raise aiohttp.ClientResponseError(
            response.request_info, (), status=response.status, message=body[:300].replace("\n", " ")
        )
    document: dict[str, Any] = await response.json(content_type=None)
    return document


async def watch_volume_status(watcher: VolumeStatusWatcher) -> AsyncIterator[None]:
    """cleanup_ctx for the app: run the watcher for the app's lifetime."""
    task = asyncio.create_task(watcher.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
