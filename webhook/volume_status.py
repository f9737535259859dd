"""The controller's volume status, kept current in memory by a list + watch of one ConfigMap.

An informer for one object, on the aiohttp client the webhook already has (the official client would
double the webhook's memory). The admission hot path only reads `self.status`; it never waits on the
API. Credentials are the pod's service account (the token file is re-read on every request, since
projected tokens rotate), or given in settings when the webhook runs outside the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from modelcache.contract.volumes import STATUS_KEY, VolumeDeniedError, VolumeStatus
from webhook.config import Settings
from webhook.errors import DenialError

log = logging.getLogger(__name__)
WATCH_SECONDS = 300
_RETRY_SECONDS = (1, 2, 5, 10)


class VolumeStatusWatcher:
    """Holds the newest VolumeStatus; `run` keeps it current until cancelled."""

    def __init__(self, settings: Settings) -> None:
        self.namespace, _, self.name = settings.volume_status.partition("/")
        self.api_url = settings.kube_api_url
        self.token_file = Path(settings.kube_token_file)
        self.ca_file = settings.kube_ca_file
        self.status: VolumeStatus | None = None
        self.synced = False  # the first list succeeded: until then, the webhook is not ready

    def claim_for(self, namespace: str) -> str:
        """The PVC to mount for a pod in `namespace`, or DenialError saying what to configure."""
        status = self.status
        if status is None:
            raise DenialError(
                f"modelcache: the modelcache controller has not published the cache volume status (ConfigMap "
                f"{self.namespace}/{self.name}) yet, so no cache volume can be promised to namespace {namespace}. "
                f"Check the modelcache-controller pods in namespace {self.namespace}."
            )
        try:
            return status.claim_for(namespace, now=datetime.now(UTC))
        except VolumeDeniedError as err:
            raise DenialError(str(err)) from err

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                async with self._session() as session:
                    version = await self._list(session)
                    attempt = 0
                    while version:
                        version = await self._watch(session, version)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
                delay = _RETRY_SECONDS[min(attempt, len(_RETRY_SECONDS) - 1)]
                attempt += 1
                log.warning("volume status: %s; retrying in %d s (keeping the last known status)", err, delay)
                await asyncio.sleep(delay)

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

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps"

    async def _list(self, session: aiohttp.ClientSession) -> str:
        params = {"fieldSelector": f"metadata.name={self.name}"}
        async with session.get(self._path, params=params, headers=self._headers()) as response:
            document = await _json(response)
        items = document.get("items") or []
        self._update(items[0] if items else None)
        self.synced = True
        return str(document["metadata"]["resourceVersion"])

    async def _watch(self, session: aiohttp.ClientSession, version: str) -> str:
        """One watch call; the version to continue from, or "" to list again (410 Gone)."""
        params = {
            "fieldSelector": f"metadata.name={self.name}",
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async with session.get(self._path, params=params, headers=self._headers()) as response:
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
                if event.get("type") in ("ADDED", "MODIFIED"):
                    self._update(obj)
                elif event.get("type") == "DELETED":
                    self._update(None)
        return version

    def _update(self, configmap: dict[str, Any] | None) -> None:
        if configmap is None:
            self.status = None
            return
        text = (configmap.get("data") or {}).get(STATUS_KEY, "")
        try:
            self.status = VolumeStatus.from_json(text)
        except ValueError as err:
            log.error("volume status in %s/%s is unreadable: %s", self.namespace, self.name, err)
            self.status = None


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
