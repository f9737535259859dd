"""Node-local caches: a hostPath PersistentVolume per namespace, pre-bound to its PVC ``<claim>-node`` (pure).

A pod can mount only a PVC of its own namespace, and Pod Security ``restricted`` forbids an inline
hostPath volume, but not a PVC, whatever its volume is. So each namespace served node-locally gets a
PV of its own, all pointing at the same directory (``node_local_path``) with no node affinity: the
kubelet mounts that directory of whichever node the pod runs on, so every pod on a node, in any
namespace, shares that node's copy of a model, and each node downloads a model once. A ``local``
PersistentVolume would not do: it names one node, and a PVC bound to it pins every pod to that node.

The PVs have reclaim policy Retain (deleting one never touches the node's files) and storage class ""
(nothing provisions or deletes them but the controller). The controller's own namespace gets one too:
the cache agent DaemonSet mounts it, one agent per node.
"""

from __future__ import annotations

from modelcache.contract import JsonObject
from modelcache.contract.volumes import RWX
from modelcache.controller.config import ControllerSettings

NODE_LOCAL_NAMESPACE_LABEL = "modelcache.io/node-local-for-namespace"
NODE_PATH_ANNOTATION = "modelcache.io/node-path"


def node_volume(settings: ControllerSettings, namespace: str, *, name: str, labels: dict[str, str]) -> JsonObject:
    """The hostPath PV `name` of `namespace`'s node-local PVC: every node's own `node_local_path`."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "labels": {**labels, NODE_LOCAL_NAMESPACE_LABEL: namespace},
            "annotations": {NODE_PATH_ANNOTATION: settings.node_local_path},
        },
        "spec": {
            "capacity": {"storage": settings.storage_size},  # nominal: a hostPath volume has no quota
            "accessModes": [RWX],  # every pod on every node mounts it, each its node's directory
            "persistentVolumeReclaimPolicy": "Retain",  # deleting the PV never deletes the nodes' files
            "storageClassName": "",
            "volumeMode": "Filesystem",
            "hostPath": {"path": settings.node_local_path, "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": settings.node_claim,
            },
        },
    }


def node_claim(settings: ControllerSettings, namespace: str, *, volume: str, labels: dict[str, str]) -> JsonObject:
    """The node-local PVC of `namespace`, pre-bound to its PV `volume` (no StorageClass: nothing provisions)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": settings.node_claim, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "accessModes": [RWX],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": settings.storage_size}},
        },
    }


def stale_path(volume: JsonObject | None, settings: ControllerSettings, namespace: str) -> str:
    """Why the node-local PVC bound to `volume` points at another directory than node_local_path ("" if not)."""
    if volume is None:
        return ""
    path = ((volume.get("spec") or {}).get("hostPath") or {}).get("path", "")
    if path == settings.node_local_path:
        return ""
    return (
        f"PVC {namespace}/{settings.node_claim} is bound to {volume['metadata']['name']}, which points at "
        f"{path or '(no hostPath)'} on each node, not at the node-local cache directory {settings.node_local_path} "
        f"(MODELCACHE_NODE_LOCAL_PATH changed). Once no pod uses it, `kubectl -n {namespace} delete pvc "
        f"{settings.node_claim}`: the controller then makes one for the new directory"
    )
