"""The controller's Kubernetes API calls: plain JSON over modelcache.runtime.kube (which says why)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from modelcache.contract.volumes import STATUS_CONFIGMAP, STATUS_KEY, VolumeStatus
from modelcache.contract.wire import MODEL_KEY_LABEL
from modelcache.controller.config import ControllerSettings
from modelcache.controller.nodelocal import NODE_LOCAL_NAMESPACE_LABEL
from modelcache.controller.volumes import CACHE_SOURCE_LABEL, CLONE_NAMESPACE_LABEL, MANAGED_BY, Action, Claim, Observed
from modelcache.runtime.kube import LIVE_PODS, ApiError, Kube, path

log = logging.getLogger(__name__)
_MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())


def observe_volumes(api: Kube, settings: ControllerSettings) -> Observed:
    """List what plan_volumes needs: a handful of filtered LIST calls."""
    pods = api.get(path("v1", "pods"), params={"labelSelector": MODEL_KEY_LABEL, "fieldSelector": LIVE_PODS})
    claims = api.get(
        path("v1", "persistentvolumeclaims"), params={"fieldSelector": f"metadata.name={settings.claim_name}"}
    )
    by_namespace = {c.namespace: c for c in (Claim.of(item) for item in claims.get("items", []))}
    storage_class = None
    shared = settings.node_local != "always"
    if shared and settings.volume_mode != "existing":
        storage_class = api.read(path("storage.k8s.io/v1", "storageclasses", settings.storage_class))
    source_volume, clones, retained = None, {}, []
    if shared and settings.volume_mode == "clone":
        own = by_namespace.get(settings.namespace)
        if own is not None and own.volume_name:
            source_volume = api.read(path("v1", "persistentvolumes", own.volume_name))
        listed = api.get(
            path("v1", "persistentvolumes"), params={"labelSelector": f"{_MANAGED_SELECTOR},{CLONE_NAMESPACE_LABEL}"}
        )
        clones = {item["metadata"]["name"]: item for item in listed.get("items", [])}
        if own is None:  # a new shared PVC is due: find the volume an earlier installation retained
            selector = f"{CACHE_SOURCE_LABEL}={settings.claim_name}"
            retained = api.get(path("v1", "persistentvolumes"), params={"labelSelector": selector}).get("items", [])
    node_claims = {}
    if settings.node_local != "off":
        listed = api.get(
            path("v1", "persistentvolumeclaims"), params={"fieldSelector": f"metadata.name={settings.node_claim}"}
        )
        node_claims = {c.namespace: c for c in (Claim.of(item) for item in listed.get("items", []))}
    # Listed even when node-local caches are off: those left from before go once their PVC is deleted.
    selector = f"{_MANAGED_SELECTOR},{NODE_LOCAL_NAMESPACE_LABEL}"
    listed = api.get(path("v1", "persistentvolumes"), params={"labelSelector": selector})
    node_volumes = {item["metadata"]["name"]: item for item in listed.get("items", [])}
    return Observed(
        claims=by_namespace,
        node_claims=node_claims,
        node_volumes=node_volumes,
        wanted=frozenset(item["metadata"]["namespace"] for item in pods.get("items", [])),
        storage_class=storage_class,
        source_volume=source_volume,
        clones=clones,
        retained=retained,
    )


def apply_action(api: Kube, action: Action) -> None:
    """Carry out one create, delete or patch; a create that finds the object, or a delete that does not, is done."""
    try:
        if action.verb == "create" and action.kind == "PersistentVolumeClaim":
            api.create(path("v1", "persistentvolumeclaims", namespace=action.namespace), action.body)
        elif action.verb == "create":
            api.create(path("v1", "persistentvolumes"), action.body)
        elif action.verb == "patch":  # the shared PV: retained, or freed for the new shared PVC
            api.patch(path("v1", "persistentvolumes", action.name), action.body)
        else:  # the planner deletes only its own PV copies, never a PVC
            api.delete(path("v1", "persistentvolumes", action.name))
    except ApiError as err:
        if (action.verb, err.status) not in (("create", 409), ("delete", 404)):
            raise
    where = f"{action.namespace}/{action.name}" if action.namespace else action.name
    log.info("%sd %s %s%s", action.verb, action.kind, where, f": {action.reason}" if action.reason else "")


def write_status(api: Kube, settings: ControllerSettings, status: VolumeStatus) -> None:
    """Publish the status document into its ConfigMap (created on first use)."""
    data = {STATUS_KEY: status.to_json()}
    try:
        api.patch(path("v1", "configmaps", STATUS_CONFIGMAP, namespace=settings.namespace), {"data": data})
    except ApiError as err:
        if err.status != 404:
            raise
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": STATUS_CONFIGMAP, "namespace": settings.namespace, "labels": dict(MANAGED_BY)},
            "data": data,
        }
        api.create(path("v1", "configmaps", namespace=settings.namespace), body)


def watch_changes(api: Kube, settings: ControllerSettings, *, timeout_seconds: int) -> list[Watcher]:
    """The watches that should wake the controller: new modelcache pods, and any change to a cache PVC
    (and to a node-local one, when those are on)."""

    def model_pods() -> Iterator[str]:
        yield from _events(api, path("v1", "pods"), ("ADDED",), timeout_seconds, labelSelector=MODEL_KEY_LABEL)

    def claims_named(name: str) -> Watcher:
        def claims() -> Iterator[str]:
            yield from _events(
                api,
                path("v1", "persistentvolumeclaims"),
                ("ADDED", "MODIFIED", "DELETED"),
                timeout_seconds,
                fieldSelector=f"metadata.name={name}",
            )

        claims.__name__ = f"claims {name}"
        return claims

    names = [settings.claim_name, *([settings.node_claim] if settings.node_local != "off" else [])]
    return [model_pods, *(claims_named(name) for name in names)]


Watcher = Callable[[], Iterator[str]]


def _events(api: Kube, collection: str, types: tuple[str, ...], timeout_seconds: int, **selector: str) -> Iterator[str]:
    """The namespaces of watch events of the given types (one watch call, ending after the timeout)."""
    for event in api.watch(collection, timeout_seconds=timeout_seconds, params=selector):
        if event["type"] in types:
            yield event["object"]["metadata"].get("namespace", "")
