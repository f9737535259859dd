"""Pure pod logic: read the annotations, decide, and build explicit JSON Patch ops.

No HTTP and no Kubernetes API here. The input is the raw pod of the AdmissionReview; the output is a
:class:`Decision` with ``add`` ops that apply to exactly that object (missing arrays are created, never
appended to), so re-running on the patched pod finds our injection and yields no ops.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from modelcache.contract import JsonObject, keys, sources
from modelcache.contract import annotation as a
from modelcache.contract import wire as w
from modelcache.contract.errors import ContractError
from webhook.config import Settings
from webhook.errors import DenialError, ReviewError
from webhook.review import PatchOp

Outcome = Literal["skipped", "already_injected", "injected", "opted_out"]
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
# Env that workload-identity webhooks (EKS IRSA, EKS Pod Identity) put on app containers. If such a
# webhook ran before us, our init container lacks them, so we copy the literal values for s3:// models.
_WORKLOAD_IDENTITY_ENV = (
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
)
_RESERVED_VOLUMES = (w.CACHE_VOLUME_NAME, w.SCRATCH_VOLUME_NAME, w.PIN_VOLUME_NAME, w.NO_TOKEN_VOLUME_NAME)
_PIN_SIZE_LIMIT = "1Mi"  # one symlink
_NO_TOKEN_SIZE_LIMIT = "1Ki"  # noqa: S105 (a size: it stays empty, nothing writes to a read-only mount)
_TOKEN_FILE_ENV = ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one pod."""

    outcome: Outcome
    patch: tuple[PatchOp, ...] = ()
    warnings: tuple[str, ...] = ()
    key: str | None = None


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """The pod's modelcache.io/* annotations, parsed."""

    source: sources.Source
    key: str
    include: tuple[str, ...]
    mount_path: str
    container_names: tuple[str, ...] | None
    secret: str | None
    resources: tuple[tuple[str, str, str], ...]  # (section, kind, quantity): immutable, as it is cached
    warnings: tuple[str, ...]
    refresh: bool = False
    wait: bool | None = None  # modelcache.io/wait-for-model; None: the cluster default decides


@dataclass(frozen=True, slots=True)
class PodView:
    """Typed access to the parts of the raw pod we read; malformed shapes raise ReviewError."""

    metadata: JsonObject
    spec: JsonObject
    annotations: dict[str, str]
    containers: list[JsonObject]
    init_containers: list[JsonObject]
    ephemeral_containers: list[JsonObject]
    volumes: list[JsonObject]

    @classmethod
    def of(cls, pod: JsonObject) -> PodView:
        metadata = _object(pod, "metadata")
        spec = _object(pod, "spec")
        annotations = _object(metadata, "annotations")
        if not all(isinstance(v, str) for v in annotations.values()):
            raise ReviewError("metadata.annotations has a value that is not a string")
        return cls(
            metadata=metadata,
            spec=spec,
            annotations=annotations,
            containers=_named_objects(spec, "containers"),
            init_containers=_named_objects(spec, "initContainers"),
            ephemeral_containers=_named_objects(spec, "ephemeralContainers"),
            volumes=_named_objects(spec, "volumes"),
        )


def decide(
    pod: JsonObject,
    *,
    settings: Settings,
    claim_for: Callable[[], str] | None = None,
    model_ready: Callable[[str], bool | None] | None = None,
) -> Decision:
    """Decide what a pod CREATE gets. Raises DenialError (refuse the pod) or ReviewError (malformed).

    `claim_for` names the cache PVC of the pod's namespace, or raises DenialError when that namespace
    cannot get a usable one (the controller's volume status); without it, settings.pvc_name is used.
    It is called only for pods that use the shared cache. `model_ready(key)` says whether the model is
    Ready in that cache (from memory); a pod that waits for its model and finds it not Ready gets the
    scheduling gate. Without it (no volume status), no pod is gated: nothing would remove the gate.
    None from it: the namespace's cache is node-local, where a model is ready per node and the pod has
    no node yet, so it is never gated (a pod that asks to wait is told so).
    """
    view = PodView.of(pod)
    if a.MODEL_ANNOTATION not in view.annotations:
        return Decision("skipped")
    if MIRROR_POD_ANNOTATION in view.annotations:
        return Decision("skipped", warnings=("modelcache: static (mirror) pods cannot be injected; ignored",))
    request = read_request(view.annotations, settings=settings)
    if _already_injected(view, request):
        return Decision("already_injected", key=request.key)
    opted_out_by, warnings = _opt_out(view)
    targets = _target_containers(view, request)
    claim = None
    if opted_out_by is None:
        claim = claim_for() if claim_for is not None else settings.pvc_name
    patch, env_warnings = _build_patch(view, request, targets=targets, claim=claim, settings=settings)
    if claim is not None and model_ready is not None:
        gated = _gated(view, request, settings, model_ready)
        if gated:
            patch += _append("/spec/schedulingGates", view.spec.get("schedulingGates"), [{"name": w.SCHEDULING_GATE}])
        elif gated is None and request.wait:
            warnings += (
                f"modelcache: {a.WAIT_ANNOTATION} is ignored: this namespace's cache is node-local (a model is ready "
                "per node, and the pod has no node yet); the pod is scheduled now and its init container fetches it",
            )
    if opted_out_by is not None:
        warnings += (
            f"modelcache: {w.OPT_OUT_ENV} is set in container {opted_out_by}: the model goes to pod-local storage",
        )
    return Decision(
        "injected" if opted_out_by is None else "opted_out",
        patch=tuple(patch),
        warnings=request.warnings + warnings + env_warnings,
        key=request.key,
    )


def _gated(
    view: PodView, request: ModelRequest, settings: Settings, model_ready: Callable[[str], bool | None]
) -> bool | None:
    """Whether the pod waits unscheduled: it asks to (or the default says so), and its model is not Ready.

    A pod bound to a node already (spec.nodeName) cannot take a gate; nor is a pod gated twice. None:
    it would, but readiness cannot be known before scheduling (a node-local cache)."""
    wants = settings.wait_for_model if request.wait is None else request.wait
    if not wants or view.spec.get("nodeName"):
        return False
    gates = view.spec.get("schedulingGates") or []
    if any(isinstance(g, dict) and g.get("name") == w.SCHEDULING_GATE for g in gates):
        return False
    ready = model_ready(request.key)
    return None if ready is None else not ready


def read_request(annotations: dict[str, str], *, settings: Settings) -> ModelRequest:
    """Parse every modelcache.io/* annotation; one DenialError lists every problem.

    Every replica of a workload carries the same annotations, so the parse is cached: it depends
    only on the modelcache.io/* entries and on the (frozen) settings.
    """
    ours = tuple(sorted((k, v) for k, v in annotations.items() if k.startswith(a.ANNOTATION_PREFIX)))
    return _read_request_cached(ours, settings)


@functools.lru_cache(maxsize=1024)
def _read_request_cached(ours: tuple[tuple[str, str], ...], settings: Settings) -> ModelRequest:
    annotations = dict(ours)
    problems: list[str] = []

    def attempt(parse: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except ContractError as err:
            problems.append(str(err))
            return None

    source = attempt(sources.parse_source, annotations[a.MODEL_ANNOTATION], allow_http=settings.allow_http)
    include: tuple[str, ...] = ()
    if a.INCLUDE_ANNOTATION in annotations:
        include = attempt(a.parse_include, annotations[a.INCLUDE_ANNOTATION]) or ()
    mount_path = settings.mount_path
    if a.MOUNT_PATH_ANNOTATION in annotations:
        mount_path = attempt(a.parse_mount_path, annotations[a.MOUNT_PATH_ANNOTATION]) or mount_path
    names = None
    if a.CONTAINERS_ANNOTATION in annotations:
        names = attempt(a.parse_container_names, annotations[a.CONTAINERS_ANNOTATION])
    secret = None
    if a.SECRET_ANNOTATION in annotations:
        secret = attempt(a.parse_secret_name, annotations[a.SECRET_ANNOTATION])
    refresh = False
    if a.REFRESH_ANNOTATION in annotations:
        refresh = bool(attempt(a.parse_flag, annotations[a.REFRESH_ANNOTATION], annotation=a.REFRESH_ANNOTATION))
    wait = None
    if a.WAIT_ANNOTATION in annotations:
        wait = attempt(a.parse_flag, annotations[a.WAIT_ANNOTATION], annotation=a.WAIT_ANNOTATION)
    resources = _resources(annotations, settings, problems)
    if problems or source is None:
        raise DenialError("modelcache: " + " ".join(problems))
    return ModelRequest(
        source=source,
        key=keys.model_key(source, include),
        include=include,
        mount_path=mount_path,
        container_names=names,
        secret=secret,
        resources=resources,
        warnings=_annotation_warnings(annotations, source),
        refresh=refresh,
        wait=wait,
    )


def _resources(
    annotations: dict[str, str], settings: Settings, problems: list[str]
) -> tuple[tuple[str, str, str], ...]:
    """The fetcher's requests and limits: settings, overridden per workload by annotations."""
    wanted: dict[tuple[str, str], tuple[str, str]] = {
        ("requests", "cpu"): (a.CPU_REQUEST_ANNOTATION, settings.fetcher_cpu_request),
        ("limits", "cpu"): (a.CPU_LIMIT_ANNOTATION, settings.fetcher_cpu_limit),
        ("requests", "memory"): (a.MEMORY_REQUEST_ANNOTATION, settings.fetcher_memory_request),
        ("limits", "memory"): (a.MEMORY_LIMIT_ANNOTATION, settings.fetcher_memory_limit),
    }
    resources: JsonObject = {"requests": {}, "limits": {}}
    amounts = {}
    for (section, kind), (annotation, default) in wanted.items():
        value = annotations.get(annotation, default)
        try:
            amounts[section, kind] = a.parse_quantity(value, annotation=annotation, kind=kind)  # type: ignore[arg-type]
        except ContractError as err:
            problems.append(str(err))
        resources[section][kind] = value
    for kind in ("cpu", "memory"):
        request, limit = amounts.get(("requests", kind)), amounts.get(("limits", kind))
        if request is not None and limit is not None and request > limit:
            problems.append(
                f"the fetcher's {kind} request {resources['requests'][kind]} is more than its limit "
                f"{resources['limits'][kind]}; set {wanted['limits', kind][0]} to at least the request."
            )
    return tuple((section, kind, value) for section, kinds in resources.items() for kind, value in kinds.items())


def _annotation_warnings(annotations: dict[str, str], source: sources.Source) -> tuple[str, ...]:
    warnings = [
        f"modelcache: unknown annotation {name} is ignored; see docs/annotations.md"
        for name in sorted(annotations)
        if name.startswith(a.ANNOTATION_PREFIX) and name not in a.KNOWN_ANNOTATIONS
    ]
    if isinstance(source, sources.HubSource) and source.revision != sources.DEFAULT_REVISION:
        warnings.append(f"modelcache: pass --revision {source.revision} to the engine (or load $MODEL_PATH) to read it")
    return tuple(warnings)


def _already_injected(view: PodView, request: ModelRequest) -> bool:
    """True when our injection is there; DenialError when our reserved names are taken by something else."""
    volume_names = {v["name"] for v in view.volumes}
    fetchers = [x for x in view.init_containers if x["name"] == w.FETCHER_CONTAINER_NAME]
    # Without the pin: a pod injected by a version before it (a copied spec) is injected all the same.
    complete = len(fetchers) == 1 and {w.CACHE_VOLUME_NAME, w.SCRATCH_VOLUME_NAME} <= volume_names
    if complete:
        injected_for = _env_value(fetchers[0], w.SOURCE_ENV)
        if injected_for == request.source.uri:
            return True
        raise DenialError(
            f"modelcache: this pod was injected for {injected_for!r} but its annotation "
            f"{a.MODEL_ANNOTATION} now names {request.source.uri!r}; create the pod again from its template"
        )
    squatters = [
        f"container {x['name']}"
        for x in view.containers + view.init_containers + view.ephemeral_containers
        if x["name"] == w.FETCHER_CONTAINER_NAME
    ] + [f"volume {name}" for name in sorted(volume_names & set(_RESERVED_VOLUMES))]
    for container in view.containers + view.init_containers:
        for mount in _named_objects(container, "volumeMounts"):
            if mount["name"] in _RESERVED_VOLUMES:
                squatters.append(f"a volumeMount of container {container['name']} named {mount['name']}")
    if squatters:
        raise DenialError(
            f"modelcache: the pod uses names that modelcache reserves ({', '.join(squatters)}); rename them "
            f"(reserved: container {w.FETCHER_CONTAINER_NAME}, volumes {', '.join(_RESERVED_VOLUMES)})"
        )
    return False


def _opt_out(view: PodView) -> tuple[str | None, tuple[str, ...]]:
    """The first container that sets AIOLI_DISABLE_MODEL_CACHE to a true value, and warnings."""
    opted_out_by: str | None = None
    warnings: list[str] = []
    for container in view.containers + view.init_containers:
        for entry in _named_objects(container, "env"):
            if entry["name"] != w.OPT_OUT_ENV:
                continue
            value = entry.get("value")
            if isinstance(value, str):
                if w.is_true(value) and opted_out_by is None:
                    opted_out_by = container["name"]
            elif "valueFrom" in entry:
                warnings.append(
                    f"modelcache: {w.OPT_OUT_ENV} in container {container['name']} uses valueFrom, which "
                    "admission cannot read; ignored"
                )
    return opted_out_by, tuple(warnings)


def _target_containers(view: PodView, request: ModelRequest) -> list[int]:
    """Indices of the app containers that get the mount and env."""
    names = [x["name"] for x in view.containers]
    if request.container_names is None:
        targets = list(range(len(names)))
    else:
        unknown = [n for n in request.container_names if n not in names]
        if unknown:
            raise DenialError(
                f"modelcache: {a.CONTAINERS_ANNOTATION} names {', '.join(unknown)}, which the pod does not "
                f"have; its containers are {', '.join(names) or 'none'}"
            )
        targets = [names.index(n) for n in request.container_names]
    for index in targets:
        for mount in _named_objects(view.containers[index], "volumeMounts"):
            if mount.get("mountPath") == request.mount_path:
                raise DenialError(
                    f"modelcache: container {names[index]} already mounts a volume at {request.mount_path}; "
                    f"choose another path with {a.MOUNT_PATH_ANNOTATION}"
                )
            if mount.get("mountPath") == w.PIN_MOUNT_PATH:
                raise DenialError(
                    f"modelcache: container {names[index]} already mounts a volume at {w.PIN_MOUNT_PATH}, where "
                    "modelcache puts the link to the pod's model version (MODEL_PATH); move that mount"
                )
    return targets


def _build_patch(
    view: PodView, request: ModelRequest, *, targets: list[int], claim: str | None, settings: Settings
) -> tuple[list[PatchOp], tuple[str, ...]]:
    ops: list[PatchOp] = []
    warnings: list[str] = []
    shared = claim is not None
    if shared:
        labels = view.metadata.get("labels")
        label_path = "/metadata/labels/" + _escape(w.MODEL_KEY_LABEL)
        if not isinstance(labels, dict):
            ops.append({"op": "add", "path": "/metadata/labels", "value": {w.MODEL_KEY_LABEL: request.key}})
        elif labels.get(w.MODEL_KEY_LABEL) != request.key:
            ops.append({"op": "add", "path": label_path, "value": request.key})
    ops += _append("/spec/volumes", view.spec.get("volumes"), _volumes(claim, settings))
    mounts = [
        {"name": w.CACHE_VOLUME_NAME, "mountPath": request.mount_path, "readOnly": True},
        {"name": w.PIN_VOLUME_NAME, "mountPath": w.PIN_MOUNT_PATH, "readOnly": True},
    ]
    app_env = _app_env(request)
    for index in targets:
        container = view.containers[index]
        base = f"/spec/containers/{index}"
        ops += _append(base + "/volumeMounts", container.get("volumeMounts"), mounts)
        present = {e["name"] for e in _named_objects(container, "env")}
        missing = [e for e in app_env if e["name"] not in present]
        warnings += [
            f"modelcache: container {container['name']} already sets {e['name']}; its value is kept"
            for e in app_env
            if e["name"] in present
        ]
        ops += _append(base + "/env", container.get("env"), missing)
    fetcher = _fetcher_container(view, request, targets=targets, shared=shared, settings=settings)
    ops += _append("/spec/initContainers", view.spec.get("initContainers"), [fetcher])
    return ops, tuple(warnings)


def _volumes(claim: str | None, settings: Settings) -> list[JsonObject]:
    cache: JsonObject = {"name": w.CACHE_VOLUME_NAME}
    if claim is not None:
        cache["persistentVolumeClaim"] = {"claimName": claim}
    else:
        cache["emptyDir"] = {"sizeLimit": settings.pod_local_size_limit}
    scratch = {"name": w.SCRATCH_VOLUME_NAME, "emptyDir": {"sizeLimit": settings.scratch_size_limit}}
    pin = {"name": w.PIN_VOLUME_NAME, "emptyDir": {"sizeLimit": _PIN_SIZE_LIMIT}}
    no_token = {"name": w.NO_TOKEN_VOLUME_NAME, "emptyDir": {"sizeLimit": _NO_TOKEN_SIZE_LIMIT}}
    return [cache, scratch, pin, no_token]


def _app_env(request: ModelRequest) -> list[JsonObject]:
    env = [{"name": w.MODEL_PATH_ENV, "value": w.PIN_PATH}]
    if isinstance(request.source, sources.HubSource):
        env += [
            {"name": w.HF_HUB_CACHE_ENV, "value": w.hub_cache_path(request.mount_path)},
            {"name": w.HF_HUB_OFFLINE_ENV, "value": "1"},
        ]
    return env


def _fetcher_container(
    view: PodView, request: ModelRequest, *, targets: list[int], shared: bool, settings: Settings
) -> JsonObject:
    env = _fetcher_env(request, shared=shared, settings=settings)
    mounts: list[JsonObject] = [
        {"name": w.CACHE_VOLUME_NAME, "mountPath": request.mount_path},
        {"name": w.SCRATCH_VOLUME_NAME, "mountPath": w.SCRATCH_MOUNT_PATH},
        {"name": w.PIN_VOLUME_NAME, "mountPath": w.PIN_MOUNT_PATH},
        {"name": w.NO_TOKEN_VOLUME_NAME, "mountPath": w.SERVICE_ACCOUNT_TOKEN_PATH, "readOnly": True},
    ]
    if isinstance(request.source, sources.S3Source):
        identity_env, identity_mounts = _workload_identity(view, targets)
        env += identity_env
        if any(m["mountPath"] == w.SERVICE_ACCOUNT_TOKEN_PATH for m in identity_mounts):
            mounts = [m for m in mounts if m["name"] != w.NO_TOKEN_VOLUME_NAME]  # web identity uses that token
        mounts += identity_mounts
    security: JsonObject = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod_security = view.spec.get("securityContext")
    if isinstance(pod_security, dict) and pod_security.get("runAsUser") == 0:
        security["runAsUser"] = settings.fetcher_uid  # the pod runs as root; runAsNonRoot would refuse it
    return {
        "name": w.FETCHER_CONTAINER_NAME,
        "image": settings.fetcher_image,
        "imagePullPolicy": settings.fetcher_image_pull_policy,
        "env": env,
        "resources": _resource_dict(request.resources),
        "securityContext": security,
        "terminationMessagePath": w.TERMINATION_LOG_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }


def _fetcher_env(request: ModelRequest, *, shared: bool, settings: Settings) -> list[JsonObject]:
    """What the fetcher reads (modelcache.contract.wire): the model, the volume, the pod, the source's access."""
    env: list[JsonObject] = [
        {"name": w.SOURCE_ENV, "value": request.source.uri},
        {"name": w.MODEL_KEY_ENV, "value": request.key},
        {"name": w.CACHE_ROOT_ENV, "value": request.mount_path},
        {"name": w.MODEL_PATH_ENV, "value": w.model_path(request.mount_path, request.key)},
        {"name": w.PIN_PATH_ENV, "value": w.PIN_PATH},
        {"name": w.SHARED_CACHE_ENV, "value": "true" if shared else "false"},
        {"name": w.POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": w.POD_NAMESPACE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": w.POD_UID_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": w.NODE_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    if request.include:
        env.append({"name": w.INCLUDE_ENV, "value": ",".join(request.include)})
    if settings.fetcher_lock_timeout != w.DEFAULT_LOCK_TIMEOUT:  # the fetcher's own default otherwise
        env.append({"name": w.LOCK_TIMEOUT_ENV, "value": f"{settings.fetcher_lock_timeout:g}s"})
    if settings.fetcher_takeover_after != w.DEFAULT_TAKEOVER_AFTER:
        env.append({"name": w.TAKEOVER_AFTER_ENV, "value": f"{settings.fetcher_takeover_after:g}s"})
    if request.refresh:
        env.append({"name": w.REFRESH_ENV, "value": "true"})
    if settings.hf_endpoint and isinstance(request.source, sources.HubSource):
        env.append({"name": w.HF_ENDPOINT_ENV, "value": settings.hf_endpoint})
    if isinstance(request.source, sources.HttpSource) and request.source.scheme == "http":
        env.append({"name": w.ALLOW_HTTP_ENV, "value": "true"})  # the fetcher checks the source again
    if settings.s3_endpoint and isinstance(request.source, sources.S3Source):
        env.append({"name": w.S3_ENDPOINT_ENV, "value": settings.s3_endpoint})
    if request.secret:
        env.append({"name": w.SECRET_NAME_ENV, "value": request.secret})
        env += [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": request.secret, "key": key, "optional": True}}}
            for key in w.SECRET_KEYS_BY_SCHEME[request.source.scheme]
        ]
    return env


def _resource_dict(resources: tuple[tuple[str, str, str], ...]) -> JsonObject:
    result: JsonObject = {}
    for section, kind, value in resources:
        result.setdefault(section, {})[kind] = value
    return result


def _workload_identity(view: PodView, targets: list[int]) -> tuple[list[JsonObject], list[JsonObject]]:
    """Copy IRSA / Pod Identity env and the token's mount from the first app container that has them."""
    for index in targets:
        container = view.containers[index]
        env = {e["name"]: e for e in _named_objects(container, "env") if isinstance(e.get("value"), str)}
        if "AWS_ROLE_ARN" not in env and "AWS_CONTAINER_CREDENTIALS_FULL_URI" not in env:
            continue
        copied = [dict(env[name]) for name in _WORKLOAD_IDENTITY_ENV if name in env]
        token_dirs = {posixpath.dirname(env[name]["value"]) for name in _TOKEN_FILE_ENV if name in env}
        mounts = [
            {"name": m["name"], "mountPath": m["mountPath"], "readOnly": True}
            for m in _named_objects(container, "volumeMounts")
            if isinstance(m.get("mountPath"), str) and m["mountPath"] in token_dirs
        ]
        return copied, mounts
    return [], []


def _append(path: str, existing: object, items: list[JsonObject]) -> list[PatchOp]:
    """Ops that append items to the array at path, creating the array when it is absent."""
    if not items:
        return []
    if not isinstance(existing, list):
        return [{"op": "add", "path": path, "value": items}]
    return [{"op": "add", "path": path + "/-", "value": item} for item in items]


def _escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _env_value(container: JsonObject, name: str) -> str | None:
    for entry in _named_objects(container, "env"):
        if entry["name"] == name and isinstance(entry.get("value"), str):
            return str(entry["value"])
    return None


def _object(parent: JsonObject, key: str) -> JsonObject:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ReviewError(f"{key} is a {type(value).__name__}, expected an object")
    return value


def _named_objects(parent: JsonObject, key: str) -> list[JsonObject]:
    """A list of objects, each with a string name; anything else is a malformed review."""
    value = parent.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise ReviewError(f"{key} is not a list of objects")
    for item in value:
        if type(item) is not dict or type(item.get("name")) is not str:
            raise ReviewError(f"an item of {key} is not an object with a name")
    return value
