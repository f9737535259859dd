"""The controller's Kubernetes API calls, on the official client; objects travel as plain JSON dicts
(modelcache.runtime.kube says why)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from modelcache.contract.volumes import STATUS_CONFIGMAP, STATUS_KEY, VolumeStatus
from modelcache.contract.wire import MODEL_KEY_LABEL
from modelcache.controller.config import ControllerSettings
from modelcache.controller.volumes import CLONE_NAMESPACE_LABEL, MANAGED_BY, Action, Claim, Observed
from modelcache.runtime.kube import as_json, read_object

log = logging.getLogger(__name__)
_MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())


def observe_volumes(api: client.ApiClient, settings: ControllerSettings) -> Observed:
    """List what plan_volumes needs: a handful of filtered LIST calls."""
    core = client.CoreV1Api(api)
    pods = as_json(
        core.list_pod_for_all_namespaces(
            label_selector=MODEL_KEY_LABEL,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
            _preload_content=False,
        )
    )
    claims = as_json(
        core.list_persistent_volume_claim_for_all_namespaces(
            field_selector=f"metadata.name={settings.claim_name}", _preload_content=False
        )
    )
    by_namespace = {c.namespace: c for c in (Claim.of(item) for item in claims.get("items", []))}
    storage_class = None
    if settings.volume_mode != "existing":
        storage_class = read_object(client.StorageV1Api(api).read_storage_class, settings.storage_class)
    source_volume, clones = None, {}
    if settings.volume_mode == "clone":
        own = by_namespace.get(settings.namespace)
        if own is not None and own.volume_name:
            source_volume = read_object(core.read_persistent_volume, own.volume_name)
        listed = as_json(
            core.list_persistent_volume(
                label_selector=f"{_MANAGED_SELECTOR},{CLONE_NAMESPACE_LABEL}", _preload_content=False
            )
        )
        clones = {item["metadata"]["name"]: item for item in listed.get("items", [])}
    return Observed(
        claims=by_namespace,
        wanted=frozenset(item["metadata"]["namespace"] for item in pods.get("items", [])),
        storage_class=storage_class,
        source_volume=source_volume,
        clones=clones,
    )


def apply_action(api: client.ApiClient, action: Action) -> None:
    """Carry out one create or delete; a create that finds the object, or a delete that does not, is done."""
    core = client.CoreV1Api(api)
    try:
        if action.verb == "create" and action.kind == "PersistentVolumeClaim":
            core.create_namespaced_persistent_volume_claim(action.namespace, action.body, _preload_content=False)
        elif action.verb == "create":
            core.create_persistent_volume(action.body, _preload_content=False)
        else:  # the planner deletes only its own PV copies, never a PVC
            core.delete_persistent_volume(action.name, _preload_content=False)
    except ApiException as err:
        if (action.verb, err.status) not in (("create", 409), ("delete", 404)):
            raise
    where = f"{action.namespace}/{action.name}" if action.namespace else action.name
    log.info("%sd %s %s%s", action.verb, action.kind, where, f": {action.reason}" if action.reason else "")


def write_status(api: client.ApiClient, settings: ControllerSettings, status: VolumeStatus) -> None:
    """Publish the status document into its ConfigMap (created on first use)."""
    core = client.CoreV1Api(api)
    data = {STATUS_KEY: status.to_json()}
    try:
        core.patch_namespaced_config_map(STATUS_CONFIGMAP, settings.namespace, {"data": data}, _preload_content=False)
    except ApiException as err:
        if err.status != 404:
            raise
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": STATUS_CONFIGMAP, "namespace": settings.namespace, "labels": dict(MANAGED_BY)},
            "data": data,
        }
        core.create_namespaced_config_map(settings.namespace, body, _preload_content=False)


def watch_changes(api: client.ApiClient, settings: ControllerSettings, *, timeout_seconds: int) -> list[Watcher]:
    """The watches that should wake the controller: new modelcache pods, and any change to a cache PVC."""
    core = client.CoreV1Api(api)

    def model_pods() -> Iterator[str]:
        yield from _events(
            core.list_pod_for_all_namespaces, ("ADDED",), timeout_seconds, label_selector=MODEL_KEY_LABEL
        )

    def claims() -> Iterator[str]:
        yield from _events(
            core.list_persistent_volume_claim_for_all_namespaces,
            ("ADDED", "MODIFIED", "DELETED"),
            timeout_seconds,
            field_selector=f"metadata.name={settings.claim_name}",
        )

    return [model_pods, claims]


Watcher = Callable[[], Iterator[str]]


def _events(call: Any, types: tuple[str, ...], timeout_seconds: int, **selector: str) -> Iterator[str]:
    """The namespaces of watch events of the given types (one watch call, ending after the timeout)."""
    for event in watch.Watch().stream(call, timeout_seconds=timeout_seconds, **selector):
        if event["type"] in types:
            yield event["raw_object"]["metadata"].get("namespace", "")
