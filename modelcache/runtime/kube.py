"""The Kubernetes API for the controller, the cache agent, the CLI and the certificate tool, as plain JSON.

The connection is lightkube's: it reads the in-cluster service account (its projected token re-read on
every request) or the kubeconfig (tokens, client certificates, exec credential plugins such as `aws eks
get-token`) and gives an httpx2 client with the server's address, CA and authentication; the official
client did the same in 20 times the image size (docs/benchmarks.md). Requests and answers are the JSON
the API documents, never model classes: an object is copied field for field (a PersistentVolume's
source, for instance) without a round trip through models that may not know a newer field.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx2

from modelcache.contract import JsonObject
from modelcache.contract.pods import PodRef
from modelcache.contract.wire import MODEL_KEY_LABEL

LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
# The apiserver's metadata-only list (what kubectl get --show-kind uses for wide lists); JSON as fallback.
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
_PATCH_TYPES = {"merge": "application/merge-patch+json", "json": "application/json-patch+json"}
DEFAULT_TIMEOUT = 30.0  # seconds: connect and each read


class ApiError(Exception):
    """The apiserver answered with an error status; `message` is its own explanation (the Status body)."""

    def __init__(self, status: int, body: bytes, *, method: str, path: str) -> None:
        self.status, self.body = status, body
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        found = document if isinstance(document, dict) else {}
        self.reason = str(found.get("reason") or httpx2.codes.get_reason_phrase(status) or "")
        self.message = str(found.get("message") or self.reason)
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")


# What a call can raise besides ApiError: the network or TLS (httpx2), or the token file (OSError).
TRANSPORT_ERRORS = (httpx2.HTTPError, OSError)
API_ERRORS = (ApiError, httpx2.HTTPError, OSError)


class Kube:
    """JSON over the API server's REST paths (``/api/v1/...``, ``/apis/<group>/<version>/...``)."""

    def __init__(self, http: httpx2.Client) -> None:
        self.http = http

    @classmethod
    def at(cls, url: str, *, token: str, timeout: float = DEFAULT_TIMEOUT) -> Kube:
        """A server at `url` with a bearer token (tests, and the stand-in in devtools/)."""
        headers = {"Authorization": f"Bearer {token}"}
        return cls(httpx2.Client(base_url=url, headers=headers, timeout=timeout))

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float | None = None,
    ) -> JsonObject:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Accept": accept} | ({"Content-Type": content_type} if content is not None else {})
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        response = self.http.request(method, path, params=params, content=content, headers=headers, **extra)
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.content, method=method, path=path)
        answer: JsonObject = response.json() if response.content else {}
        return answer

    def get(self, path: str, **options: Any) -> JsonObject:
        return self.request("GET", path, **options)

    def read(self, path: str, **options: Any) -> JsonObject | None:
        """GET one object; None when it does not exist."""
        try:
            return self.get(path, **options)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def create(self, path: str, body: JsonObject | None, **options: Any) -> JsonObject:
        return self.request("POST", path, body=body, **options)

    def replace(self, path: str, body: JsonObject, **options: Any) -> JsonObject:
        """PUT: carries the resourceVersion read, so a concurrent writer makes this a 409 Conflict."""
        return self.request("PUT", path, body=body, **options)

    def patch(self, path: str, body: Any, *, kind: str = "merge", **options: Any) -> JsonObject:
        """A JSON merge patch (`kind="merge"`, RFC 7386) or a JSON Patch (`kind="json"`, RFC 6902)."""
        return self.request("PATCH", path, body=body, content_type=_PATCH_TYPES[kind], **options)

    def delete(self, path: str, **options: Any) -> JsonObject:
        return self.request("DELETE", path, **options)

    def watch(self, path: str, *, timeout_seconds: int, params: dict[str, Any] | None = None) -> Iterator[JsonObject]:
        """The events (``{"type": ..., "object": ...}``) of one watch call, which the server ends after the timeout."""
        query = {**(params or {}), "watch": "true", "timeoutSeconds": str(timeout_seconds)}
        timeout = httpx2.Timeout(DEFAULT_TIMEOUT, read=timeout_seconds + DEFAULT_TIMEOUT)
        with self.http.stream("GET", path, params=query, timeout=timeout) as response:
            if response.status_code >= 400:
                raise ApiError(response.status_code, response.read(), method="WATCH", path=path)
            for line in response.iter_lines():
                if line.strip():
                    event: JsonObject = json.loads(line)
                    if event.get("type") == "ERROR":  # e.g. 410 Gone: the caller starts a new watch
                        status = event.get("object") or {}
                        body = json.dumps(status).encode()
                        raise ApiError(int(status.get("code") or 500), body, method="WATCH", path=path)
                    yield event

    def close(self) -> None:
        self.http.close()


def connect() -> Kube:
    """In a pod: its service account; elsewhere: $KUBECONFIG or ~/.kube/config, its current context."""
    from lightkube.config.client_adapter import Client, ConnectionParams
    from lightkube.config.kubeconfig import KubeConfig

    config = KubeConfig.from_env().get()
    if config is None:  # from_env raises when it finds nothing; a kubeconfig without a current context
        raise LookupError("the kubeconfig names no current context: `kubectl config use-context <name>`")
    params = ConnectionParams(timeout=httpx2.Timeout(DEFAULT_TIMEOUT))
    return Kube(Client(config, params))


def path(api: str, plural: str, name: str = "", *, namespace: str = "") -> str:
    """The REST path of a collection or an object: api ``v1`` (core) or ``<group>/<version>``."""
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    where = f"/namespaces/{urllib.parse.quote(namespace, safe='')}" if namespace else ""
    return f"{base}{where}/{plural}" + (f"/{urllib.parse.quote(name, safe='')}" if name else "")


def utc_timestamp(moment: datetime) -> str:
    """The API's MicroTime format."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def live_pods_by_key(api: Kube, namespace: str = "", *, node: str = "") -> dict[str, list[PodRef]]:
    """Model key -> every pod not yet finished that the webhook gave that model.

    Pending pods count: their fetcher may be about to find the model ready. `namespace` limits the
    question to one namespace, for a cache volume that only its namespace mounts (provision mode);
    `node` to the pods bound to one node, for that node's own cache (node-local mode).
    Only metadata is asked for: the pods' specs (and any secret in their env) never reach us.
    """
    fields = f"{LIVE_PODS},spec.nodeName={node}" if node else LIVE_PODS
    selectors = {"labelSelector": MODEL_KEY_LABEL, "fieldSelector": fields}
    listed = api.get(path("v1", "pods", namespace=namespace), params=selectors, accept=_METADATA_ONLY)
    pods: dict[str, list[PodRef]] = {}
    for pod in listed.get("items", []):
        metadata = pod.get("metadata", {})
        key = (metadata.get("labels") or {}).get(MODEL_KEY_LABEL)
        if key:
            ref = PodRef(
                str(metadata.get("namespace", "")), str(metadata.get("name", "")), str(metadata.get("uid", ""))
            )
            pods.setdefault(key, []).append(ref)
    return pods
