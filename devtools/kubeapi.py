"""A Kubernetes API stand-in on loopback, for tests where no real apiserver is available.

It speaks the REST protocol the official client and our webhook's watcher use: GET (one object, lists
with label and field selectors, watch streams), POST, PUT with resourceVersion conflicts, PATCH
(JSON Patch, JSON merge patch) and DELETE, metadata-only lists (PartialObjectMetadataList), with the
apiserver's Status bodies and codes. Every object written is validated against the Kubernetes 1.30
schema (kubernetes-validate, strict), and a merge patch sent as JSON Patch is refused as the apiserver
refuses it. No controllers run inside: a test
plays the PV controller by calling :meth:`KubeApi.set_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jsonpatch
import kubernetes_validate
from aiohttp import web

from devtools.background import BackgroundLoop
from devtools.crds import SchemaError, custom_resources
from modelcache.contract import JsonObject

SCHEMA_VERSION = "1.30.0"


@dataclass(frozen=True)
class Resource:
    kind: str
    api_version: str
    namespaced: bool


RESOURCES = {
    ("", "pods"): Resource("Pod", "v1", True),
    ("", "persistentvolumeclaims"): Resource("PersistentVolumeClaim", "v1", True),
    ("", "persistentvolumes"): Resource("PersistentVolume", "v1", False),
    ("", "configmaps"): Resource("ConfigMap", "v1", True),
    ("", "secrets"): Resource("Secret", "v1", True),
    ("", "namespaces"): Resource("Namespace", "v1", False),
    ("", "nodes"): Resource("Node", "v1", False),
    ("", "events"): Resource("Event", "v1", True),
    ("storage.k8s.io", "storageclasses"): Resource("StorageClass", "storage.k8s.io/v1", False),
    ("coordination.k8s.io", "leases"): Resource("Lease", "coordination.k8s.io/v1", True),
    ("batch", "jobs"): Resource("Job", "batch/v1", True),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): Resource(
        "MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1", False
    ),
}
# Our CRDs (manifests/base/*-crd.yaml), served as the apiserver serves them once they are installed.
RESOURCES |= {key: Resource(cr.kind, cr.api_version, cr.namespaced) for key, cr in custom_resources().items()}
_KINDS = {r.kind: (group, plural) for (group, plural), r in RESOURCES.items()}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> JsonObject:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


class KubeApi:
    """The stand-in. Use as a context manager; `url` and `token` configure a client."""

    def __init__(
        self,
        *,
        token: str = "test-token",  # noqa: S107 (a test credential)
        grants: dict[str, list[Grant]] | None = None,
    ) -> None:
        """`grants`: when given, RBAC is enforced: each bearer token may do what its rules allow, no more."""
        self.token = token
        self.grants = grants
        self.forbidden: list[str] = []  # every refusal, for tests to show
        # Creates an admission plugin would refuse (a ResourceQuota, a policy): (kind, namespace) -> message.
        self.refuse_creates: dict[tuple[str, str], str] = {}
        self.url = ""
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self._objects: dict[tuple[str, str, str, str], JsonObject] = {}  # (group, plural, namespace, name)
        self._events: list[tuple[int, str, str, str, JsonObject]] = []  # (rv, type, group, plural, object)
        self._version = itertools.count(1000)
        self._lock = threading.Lock()
        self._changed: asyncio.Condition | None = None
        self._background: BackgroundLoop | None = None
        self._runner: web.AppRunner | None = None
        self._closing = False

    # --- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> KubeApi:
        self._background = BackgroundLoop("kube-api")
        self._background.run(self._start())
        return self

    def __exit__(self, *_: object) -> None:
        self._closing = True  # open watches end, so that shutdown does not wait for their timeouts
        self._notify()
        if self._background is not None and self._runner is not None:
            self._background.run(self._runner.cleanup())
            self._background.close()

    async def _start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def client(self, token: str | None = None) -> Any:
        """Our API client (modelcache.runtime.kube) at the stand-in with a bearer token (default: self.token)."""
        from modelcache.runtime.kube import Kube

        return Kube.at(self.url, token=token or self.token)

    # --- direct access for tests (the cluster's own controllers) ------------------------------------
    def create(self, obj: JsonObject) -> JsonObject:
        group, plural = _KINDS[obj["kind"]]
        namespace = obj["metadata"].get("namespace", "")
        return self._create(group, plural, namespace, copy.deepcopy(obj))

    def get(self, kind: str, name: str, namespace: str = "") -> JsonObject | None:
        group, plural = _KINDS[kind]
        with self._lock:
            found = self._objects.get((group, plural, namespace, name))
            return copy.deepcopy(found) if found else None

    def list(self, kind: str) -> list[JsonObject]:
        group, plural = _KINDS[kind]
        with self._lock:
            return [copy.deepcopy(o) for (g, p, _, _), o in sorted(self._objects.items()) if (g, p) == (group, plural)]

    def set_status(self, kind: str, name: str, status: JsonObject, *, namespace: str = "", **spec: Any) -> None:
        """What a controller of the cluster would do (bind a PVC, run a pod): set status and spec fields."""
        group, plural = _KINDS[kind]
        with self._lock:
            obj = copy.deepcopy(self._objects[group, plural, namespace, name])
        obj["status"] = status
        obj["spec"].update(spec)
        self._store(group, plural, namespace, obj, "MODIFIED")

    def delete(self, kind: str, name: str, namespace: str = "") -> None:
        group, plural = _KINDS[kind]
        self._delete(group, plural, namespace, name)

    # --- the store ----------------------------------------------------------------------------------
    def _create(self, group: str, plural: str, namespace: str, obj: JsonObject) -> JsonObject:
        resource = RESOURCES[group, plural]
        metadata = obj.setdefault("metadata", {})
        if "generateName" in metadata and "name" not in metadata:
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        name = metadata.get("name", "")
        if resource.namespaced:
            metadata["namespace"] = namespace
        with self._lock:
            if (group, plural, namespace, name) in self._objects:
                raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists')
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        return self._store(group, plural, namespace, obj, "ADDED")

    def _store(self, group: str, plural: str, namespace: str, obj: JsonObject, event: str) -> JsonObject:
        custom = custom_resources().get((group, plural))
        if custom is None:
            _validate(obj)
        else:
            with self._lock:
                old = copy.deepcopy(self._objects.get((group, plural, namespace, obj["metadata"]["name"])))
            try:
                obj = custom.admit(obj, old)
            except SchemaError as err:
                raise ApiError(
                    422, "Invalid", f"{custom.kind}.{custom.group} {obj['metadata'].get('name')!r} is invalid: {err}"
                ) from err
            generation = int((old or {}).get("metadata", {}).get("generation", 0))
            changed = old is None or old.get("spec") != obj.get("spec")
            obj["metadata"]["generation"] = generation + 1 if changed else generation
        with self._lock:
            version = next(self._version)
            obj["metadata"]["resourceVersion"] = str(version)
            self._objects[group, plural, namespace, obj["metadata"]["name"]] = obj
            self._events.append((version, event, group, plural, copy.deepcopy(obj)))
        self._notify()
        return copy.deepcopy(obj)

    def _delete(
        self, group: str, plural: str, namespace: str, name: str, preconditions: JsonObject | None = None
    ) -> JsonObject:
        with self._lock:
            obj = self._objects.get((group, plural, namespace, name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            for field in ("resourceVersion", "uid"):
                wanted = (preconditions or {}).get(field)
                if wanted and wanted != obj["metadata"].get(field):
                    raise ApiError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {plural} "{name}": the {field} in the precondition '
                        f"({wanted}) does not match the {field} in record ({obj['metadata'].get(field)}). "
                        "The object might have been modified",
                    )
            del self._objects[group, plural, namespace, name]
            version = next(self._version)
            self._events.append((version, "DELETED", group, plural, copy.deepcopy(obj)))
        self._notify()
        return obj

    def _notify(self) -> None:
        if self._background is None or self._changed is None:
            return
        changed = self._changed

        async def wake() -> None:
            async with changed:
                changed.notify_all()

        asyncio.run_coroutine_threadsafe(wake(), self._background.loop)

    # --- HTTP ---------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token != self.token and (self.grants is None or token not in self.grants):
            return web.json_response(ApiError(401, "Unauthorized", "Unauthorized").status(), status=401)
        try:
            group, plural, namespace, name, subresource = _route(request.path)
            if self.grants is not None:
                self._authorize(token, request, group, (plural + subresource), namespace, name)
            if request.method == "GET" and not name:
                if request.query.get("watch") in ("1", "t", "T", "true", "TRUE", "True"):  # Go strconv.ParseBool
                    return await self._watch(request, group, plural, namespace)
                return web.json_response(self._list(request, group, plural, namespace))
            body = await self._dispatch(request, group, plural, namespace, name, subresource)
            status = 201 if request.method == "POST" else 200
            return web.json_response(body, status=status)
        except ApiError as err:
            return web.json_response(err.status(), status=err.code)

    def _authorize(self, token: str, request: web.Request, group: str, plural: str, namespace: str, name: str) -> None:
        """RBAC as the apiserver applies it, including resourceNames for list/watch by metadata.name."""
        watching = request.query.get("watch") in ("1", "t", "T", "true", "TRUE", "True")
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(request.method)
        if verb is None:
            verb = "get" if name else ("watch" if watching else "list")
        if not name and verb in ("list", "watch"):
            for term in request.query.get("fieldSelector", "").split(","):
                if term.startswith("metadata.name="):
                    name = term.removeprefix("metadata.name=")
        for scope, rule in self.grants.get(token, []) if self.grants else []:
            if scope and scope != namespace:
                continue
            if not ({group, "*"} & set(rule.get("apiGroups", [])) and {plural, "*"} & set(rule.get("resources", []))):
                continue
            if not {verb, "*"} & set(rule.get("verbs", [])):
                continue
            names = rule.get("resourceNames")
            if names and (verb == "create" or name not in names):
                continue
            return
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        message = f'{plural} "{name}" is forbidden: cannot {verb} resource "{plural}" in API group "{group}"{where}'
        self.forbidden.append(message)
        raise ApiError(403, "Forbidden", message)

    async def _dispatch(
        self, request: web.Request, group: str, plural: str, namespace: str, name: str, subresource: str
    ) -> JsonObject:
        key = (group, plural, namespace, name)
        if request.method == "POST":
            refusal = self.refuse_creates.get((RESOURCES[group, plural].kind, namespace))
            if refusal:
                raise ApiError(403, "Forbidden", refusal)
            body = await request.json()
            custom = custom_resources().get((group, plural))
            if custom is not None and custom.status_subresource:
                body.pop("status", None)  # the apiserver ignores the status of a create
            return self._create(group, plural, namespace, body)
        if request.method == "DELETE":
            options = await request.json() if request.can_read_body else {}
            return self._delete(group, plural, namespace, name, (options or {}).get("preconditions") or {})
        with self._lock:
            current = copy.deepcopy(self._objects.get(key))
        if current is None:
            raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
        if request.method == "GET":
            return current
        if request.method == "PUT":
            obj = await request.json()
            sent = obj.get("metadata", {}).get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": modified')
            obj["metadata"].update(
                uid=current["metadata"]["uid"], creationTimestamp=current["metadata"]["creationTimestamp"]
            )
            return self._store(
                group, plural, namespace, _subresource(group, plural, subresource, current, obj), "MODIFIED"
            )
        if request.method == "PATCH":
            patched = _patched(current, request, await request.json())
            return self._store(
                group, plural, namespace, _subresource(group, plural, subresource, current, patched), "MODIFIED"
            )
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported")

    def _list(self, request: web.Request, group: str, plural: str, namespace: str) -> JsonObject:
        resource = RESOURCES[group, plural]
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (g, p, ns, _), obj in sorted(self._objects.items())
                if (g, p) == (group, plural) and (not namespace or ns == namespace) and _selected(request, obj)
            ]
            version = str(next(self._version))
        if "as=PartialObjectMetadataList" in request.headers.get("Accept", ""):  # what the apiserver does
            items = [
                {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"]}
                for o in items
            ]
            return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "items": items}
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": version},
            "items": items,
        }

    async def _watch(self, request: web.Request, group: str, plural: str, namespace: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        since = int(request.query.get("resourceVersion") or 0)
        if not since:  # no version: the current state as ADDED events first, as the apiserver does
            for obj in self._list(request, group, plural, namespace)["items"]:
                await response.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
            since = next(self._version)
        timeout = float(request.query.get("timeoutSeconds", 60))
        deadline = asyncio.get_running_loop().time() + timeout
        if self._changed is None:
            raise RuntimeError("the stand-in is not running")
        while (left := deadline - asyncio.get_running_loop().time()) > 0 and not self._closing:
            with self._lock:
                pending = [e for e in self._events if e[0] > since and (e[2], e[3]) == (group, plural)]
            for version, kind, _, _, obj in pending:
                since = version
                if (not namespace or obj["metadata"].get("namespace") == namespace) and _selected(request, obj):
                    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(left, 1.0))
        await response.write_eof()
        return response


Grant = tuple[str, JsonObject]  # (namespace of a Role, or "" for a ClusterRole; one PolicyRule)


def grants_of(objects: list[JsonObject], *, service_account: str, namespace: str) -> list[Grant]:
    """The rules that rendered manifests bind to a service account (RoleBindings and ClusterRoleBindings)."""
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}
    grants: list[Grant] = []
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
        if subject not in binding.get("subjects", []):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
        role = roles[ref["kind"], scope if ref["kind"] == "Role" else "", ref["name"]]
        grants += [(scope, rule) for rule in role.get("rules", [])]
    return grants


def _route(path: str) -> tuple[str, str, str, str, str]:
    """/api/v1/... or /apis/<group>/<version>/... -> (group, plural, namespace, name, "/status" or "")."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        raise ApiError(404, "NotFound", f"no API at {path}")
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    subresource = ""
    if rest and rest[-1] == "status" and len(rest) == 3:
        rest, subresource = rest[:2], "/status"
    if not rest or (group, rest[0]) not in RESOURCES or len(rest) > 2:
        raise ApiError(404, "NotFound", f"the stand-in does not serve {path}")
    return group, rest[0], namespace, rest[1] if len(rest) == 2 else "", subresource


def _subresource(group: str, plural: str, subresource: str, current: JsonObject, new: JsonObject) -> JsonObject:
    """A CRD with a status subresource: /status writes change only the status, the object anything else."""
    custom = custom_resources().get((group, plural))
    if custom is None or not custom.status_subresource:
        return new  # the built-in kinds here: a write to .../status is stored whole, as before
    if subresource == "/status":
        kept = copy.deepcopy(current)
        kept["status"] = new.get("status", {})
        kept["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return kept
    new = copy.deepcopy(new)
    if "status" in current:
        new["status"] = copy.deepcopy(current["status"])
    else:
        new.pop("status", None)
    return new


def _selected(request: web.Request, obj: JsonObject) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, request.query.get("labelSelector", "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value.lstrip("="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    for term in filter(None, request.query.get("fieldSelector", "").split(",")):
        negate = "!=" in term
        path, value = term.split("!=" if negate else "=", 1)
        found: Any = obj
        for part in path.split("."):
            found = found.get(part, "") if isinstance(found, dict) else ""
        if (found == value.lstrip("=")) == negate:
            return False
    return True


def _patched(current: JsonObject, request: web.Request, patch: Any) -> JsonObject:
    content_type = request.content_type
    if content_type == "application/json-patch+json":
        if not isinstance(patch, list):
            raise ApiError(
                400, "BadRequest", "json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp"
            )
        try:
            result: JsonObject = jsonpatch.apply_patch(current, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
            raise ApiError(422, "Invalid", f"the JSON Patch does not apply: {err}") from err
        return result
    if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        merged: JsonObject = _merge(current, patch)
        return merged
    raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - {content_type}")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _validate(obj: JsonObject) -> None:
    try:
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        raise ApiError(422, "Invalid", f"{obj.get('kind')} {obj['metadata'].get('name')!r} is invalid: {err}") from err
