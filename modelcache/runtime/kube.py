"""The Kubernetes API for the controller, the cache agent and the CLI: the connection and shared reads.

The official client, with raw JSON (``_preload_content=False``) instead of its model classes: callers
work on the same shapes the API documents, and an object is copied field for field without a round
trip through models that may not know a newer field.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelcache.contract import JsonObject
from modelcache.contract.pods import PodRef
from modelcache.contract.wire import MODEL_KEY_LABEL

LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
# The apiserver's metadata-only list (what kubectl get --show-kind uses for wide lists); JSON as fallback.
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


def connect() -> client.ApiClient:
    """In a pod: its service account; elsewhere: the current kubeconfig context."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def as_json(response: Any) -> JsonObject:
    """The body of a raw (``_preload_content=False``) response."""
    document: JsonObject = json.loads(response.data)
    return document


def read_object(call: Any, *args: Any, **options: Any) -> JsonObject | None:
    """GET one object; None when it does not exist. `options`: the client's (``_request_timeout``)."""
    try:
        return as_json(call(*args, **{**options, "_preload_content": False}))
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def api_message(err: ApiException) -> str:
    """The apiserver's own message (its Status body), which says what refused the request."""
    try:
        return str(json.loads(err.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(err.reason)


def utc_timestamp(moment: datetime) -> str:
    """The API's MicroTime format."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def live_pods_by_key(api: client.ApiClient, namespace: str = "") -> dict[str, list[PodRef]]:
    """Model key -> every pod not yet finished that the webhook gave that model.

    Pending pods count: their fetcher may be about to find the model ready. `namespace` limits the
    question to one namespace, for a cache volume that only its namespace mounts (provision mode).
    Only metadata is asked for: the pods' specs (and any secret in their env) never reach us.
    """
    core = client.CoreV1Api(api)
    selectors: dict[str, Any] = {"label_selector": MODEL_KEY_LABEL, "field_selector": LIVE_PODS}
    selectors |= {"_preload_content": False, "_headers": {"Accept": _METADATA_ONLY}}
    if namespace:
        response = core.list_namespaced_pod(namespace, **selectors)
    else:
        response = core.list_pod_for_all_namespaces(**selectors)
    pods: dict[str, list[PodRef]] = {}
    for pod in as_json(response).get("items", []):
        metadata = pod.get("metadata", {})
        key = (metadata.get("labels") or {}).get(MODEL_KEY_LABEL)
        if key:
            ref = PodRef(
                str(metadata.get("namespace", "")), str(metadata.get("name", "")), str(metadata.get("uid", ""))
            )
            pods.setdefault(key, []).append(ref)
    return pods
