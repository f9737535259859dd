"""Cache volumes per namespace: from what the cluster has to what to create, delete and report (pure).

A pod can mount only a PVC of its own namespace. Three ways to give every namespace that runs modelcache
pods a PVC named ``claim_name``:

- ``existing``: the operator creates the PVCs; we check them (ReadWriteMany, Bound) and report;
- ``provision``: a new ReadWriteMany PVC from ``storage_class`` in each namespace (a cache per namespace);
- ``clone``: one cache PVC in the controller's namespace, provisioned from ``storage_class``; each
  namespace gets a copy of its PersistentVolume (same NFS export or hostPath, reclaim policy Retain)
  pre-bound to a PVC there, so every namespace sees the same files (MLIS's model).

Beside any of them, node-local caches (``node_local``: modelcache/controller/nodelocal.py says how):
``fallback`` gives the namespaces the shared volume cannot serve a node-local PVC instead, ``always``
gives every namespace one.

Nothing here calls the API: :func:`plan_volumes` takes a snapshot and returns actions and the status
document, so every decision is table-tested.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from modelcache.contract import JsonObject
from modelcache.contract.volumes import RWX, NamespaceVolume, VolumeStatus, unusable_claim
from modelcache.controller.config import ControllerSettings
from modelcache.controller.nodelocal import node_claim, node_volume, stale_path

MANAGED_BY = {"app.kubernetes.io/managed-by": "modelcache-controller"}
CLONE_OF_ANNOTATION = "modelcache.io/clone-of"
CLONE_NAMESPACE_LABEL = "modelcache.io/clone-for-namespace"
# On the shared volume (clone mode), with the claim name as value: it is retained, and a later
# installation binds its new shared PVC to it, so the cached files survive an uninstall.
CACHE_SOURCE_LABEL = "modelcache.io/cache-source"
# Volume types that several PVs can point at safely (MLIS checks the same two); others need the bypass.
SHAREABLE_VOLUME_TYPES = ("nfs", "hostPath")
# Provisioners whose volumes attach to one node at a time: ReadWriteMany PVCs from them never bind.
SINGLE_NODE_PROVISIONERS = {
    "ebs.csi.aws.com": "Amazon EBS",
    "kubernetes.io/aws-ebs": "Amazon EBS",
    "pd.csi.storage.gke.io": "Google persistent disk",
    "kubernetes.io/gce-pd": "Google persistent disk",
    "disk.csi.azure.com": "Azure disk",
    "kubernetes.io/azure-disk": "Azure disk",
    "cinder.csi.openstack.org": "OpenStack Cinder",
    "rancher.io/local-path": "local-path",
    "kubernetes.io/no-provisioner": "local volumes",
    "openebs.io/local": "OpenEBS local PV",
    "topolvm.io": "TopoLVM",
    "hostpath.csi.k8s.io": "the CSI hostpath driver",
}
_VOLUME_SPEC_KEYS_NOT_COPIED = ("claimRef", "storageClassName", "persistentVolumeReclaimPolicy", "accessModes")


@dataclass(frozen=True, slots=True)
class Claim:
    """The parts of a PersistentVolumeClaim we decide on."""

    namespace: str
    name: str
    phase: str
    access_modes: tuple[str, ...]
    volume_name: str
    created: datetime
    deleting: bool

    @classmethod
    def of(cls, pvc: JsonObject) -> Claim:
        metadata, spec = pvc["metadata"], pvc.get("spec", {})
        return cls(
            namespace=metadata["namespace"],
            name=metadata["name"],
            phase=pvc.get("status", {}).get("phase", "Pending"),
            access_modes=tuple(spec.get("accessModes", ())),
            volume_name=spec.get("volumeName", ""),
            created=datetime.fromisoformat(metadata["creationTimestamp"]),
            deleting=bool(metadata.get("deletionTimestamp")),
        )


@dataclass(frozen=True, slots=True)
class Observed:
    """One snapshot of the cluster, as the controller listed it."""

    claims: dict[str, Claim]  # namespace -> the PVC named claim_name there (the controller's own included)
    wanted: frozenset[str]  # namespaces with modelcache pods
    storage_class: JsonObject | None = None  # the StorageClass named storage_class, if it exists
    source_volume: JsonObject | None = None  # clone: the PV bound to the controller's own PVC
    clones: dict[str, JsonObject] = field(default_factory=dict)  # our PV copies by name
    retained: list[JsonObject] = field(default_factory=list)  # clone: PVs labelled CACHE_SOURCE_LABEL=claim_name
    node_claims: dict[str, Claim] = field(default_factory=dict)  # namespace -> its node-local PVC
    node_volumes: dict[str, JsonObject] = field(default_factory=dict)  # our node-local hostPath PVs by name


@dataclass(frozen=True, slots=True)
class Action:
    """Create a PVC or PV copy, delete a PV copy, or patch the shared PV (the controller never deletes a PVC)."""

    verb: Literal["create", "delete", "patch"]
    kind: Literal["PersistentVolumeClaim", "PersistentVolume"]
    name: str
    namespace: str = ""
    body: JsonObject | None = None
    reason: str = ""
    serves: str = ""  # the namespace whose cache volume this is for ("" for clean-up)


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    status: VolumeStatus


def plan_volumes(observed: Observed, settings: ControllerSettings, *, now: datetime) -> Plan:
    """What to create and delete so that every namespace in `observed.wanted` gets a usable cache PVC."""
    actions: list[Action] = []
    problem = ""
    shared = settings.node_local != "always"
    if shared and settings.volume_mode != "existing":
        problem = _storage_class_problem(observed.storage_class, settings)
    if shared and settings.volume_mode == "clone" and not problem:
        problem = _source_problem(observed, settings, actions, now=now)
    namespaces: dict[str, NamespaceVolume] = {}
    everyone = observed.wanted | observed.claims.keys() | observed.node_claims.keys()
    for namespace in sorted(everyone - {settings.namespace}):
        entry = _shared_state(namespace, observed, settings, problem, actions, now=now) if shared else None
        if settings.node_local == "always" or (settings.node_local == "fallback" and _falls_back(entry, problem)):
            entry = _node_local(namespace, observed, settings, actions, now=now) or entry
        if entry is not None:
            namespaces[namespace] = entry
    if settings.node_local != "off":  # the cache agents' PVC: the DaemonSet mounts it on every node
        _node_local(settings.namespace, observed, settings, actions, now=now)
    actions += _collect_released_clones(observed)
    status = VolumeStatus(
        mode=settings.volume_mode,
        claim=settings.claim_name,
        updated=now,
        controller_namespace=settings.namespace,
        problem=problem,
        namespaces=namespaces,
        node_local=settings.node_local,
        node_claim=settings.node_claim,
    )
    return Plan(tuple(actions), status)


def _shared_state(
    namespace: str,
    observed: Observed,
    settings: ControllerSettings,
    problem: str,
    actions: list[Action],
    *,
    now: datetime,
) -> NamespaceVolume | None:
    """The state of `namespace`'s shared cache PVC (None: none, and none is made), creating it when due."""
    claim = observed.claims.get(namespace)
    stale = _stale_copy(claim, observed, settings) if claim is not None else ""
    if stale:
        return NamespaceVolume("error", stale)
    if claim is not None:
        return claim_state(claim, settings, now=now)
    if settings.volume_mode != "existing" and not problem and namespace in observed.wanted:
        actions += _create_for(namespace, observed, settings)
        return NamespaceVolume("pending", "creating the cache PVC")
    return None


def _falls_back(entry: NamespaceVolume | None, problem: str) -> bool:
    """fallback: the shared volume cannot serve this namespace (none there, unusable, or none possible)."""
    return bool(problem) or entry is None or entry.state == "error"


def _node_local(
    namespace: str, observed: Observed, settings: ControllerSettings, actions: list[Action], *, now: datetime
) -> NamespaceVolume | None:
    """The state of `namespace`'s node-local PVC, creating its PV and PVC when due; None for a namespace
    that has none and no pod asking for one."""
    claim = observed.node_claims.get(namespace)
    if claim is not None:
        stale = stale_path(observed.node_volumes.get(claim.volume_name), settings, namespace)
        if stale:
            return NamespaceVolume("error", stale, node_local=True)
        state = claim_state(claim, settings, now=now, managed=True)
        return NamespaceVolume(state.state, state.message, node_local=True)
    if namespace not in observed.wanted and namespace != settings.namespace:
        return None
    name = clone_volume_name(settings.node_claim, namespace)
    pending = NamespaceVolume("pending", "creating the node-local cache PVC", node_local=True)
    existing = observed.node_volumes.get(name)
    if existing is not None and (existing.get("status") or {}).get("phase") == "Released":
        return pending  # _collect_released_clones deletes it in this pass; the next one makes it again
    if existing is None:
        body = node_volume(settings, namespace, name=name, labels=MANAGED_BY)
        actions.append(Action("create", "PersistentVolume", name, body=body, serves=namespace))
    body = node_claim(settings, namespace, volume=name, labels=MANAGED_BY)
    actions.append(
        Action("create", "PersistentVolumeClaim", settings.node_claim, namespace=namespace, body=body, serves=namespace)
    )
    return pending


def _storage_class_problem(storage_class: JsonObject | None, settings: ControllerSettings) -> str:
    if storage_class is None:
        return (
            f"StorageClass {settings.storage_class!r} does not exist. Set storageClassName "
            "(MODELCACHE_STORAGE_CLASS) to a ReadWriteMany class listed by `kubectl get storageclass`."
        )
    provisioner = str(storage_class.get("provisioner", ""))
    if provisioner in SINGLE_NODE_PROVISIONERS and not settings.bypass_storage_check:
        return (
            f"StorageClass {settings.storage_class!r} uses {provisioner} ({SINGLE_NODE_PROVISIONERS[provisioner]}), "
            "which cannot provide ReadWriteMany volumes. Use a shared-filesystem class (NFS such as nfs-client, "
            "CephFS, EFS, Filestore, Azure Files); set bypassStorageCheck only if this one really does RWX."
        )
    return ""


def _source_problem(observed: Observed, settings: ControllerSettings, actions: list[Action], *, now: datetime) -> str:
    """Clone mode: the shared cache PVC in our namespace must exist, be RWX, bound, and shareable."""
    source = observed.claims.get(settings.namespace)
    where = f"{settings.namespace}/{settings.claim_name}"
    if source is None:
        actions += _shared_claim(observed, settings)
        return ""  # created now; namespaces wait (pending) until it binds
    state = claim_state(source, settings, now=now)
    if state.state == "error":
        return f"the shared cache PVC {where}: {state.message}"
    volume = observed.source_volume
    if state.state == "pending" or volume is None:
        return ""
    kinds = [key for key in volume.get("spec", {}) if key not in _COMMON_VOLUME_SPEC_KEYS]
    if not settings.bypass_storage_check and not any(kind in SHAREABLE_VOLUME_TYPES for kind in kinds):
        detail = kinds[0] if kinds else "unknown"
        if detail == "csi":
            detail = f"csi (driver {volume['spec']['csi'].get('driver', '?')})"
        return (
            f"the shared cache volume {volume['metadata']['name']} (of PVC {where}) is of type {detail}; only nfs "
            "and hostPath volumes can be copied into other namespaces safely. Use an NFS StorageClass, or set "
            "bypassStorageCheck (MODELCACHE_BYPASS_STORAGE_CHECK) if this driver allows one volume in several PVs."
        )
    actions += _retain(volume, settings)
    return ""


def _shared_claim(observed: Observed, settings: ControllerSettings) -> list[Action]:
    """The shared PVC: bound to the volume an earlier installation retained, when there is one."""
    reusable = sorted(
        (
            pv
            for pv in observed.retained
            if pv.get("status", {}).get("phase") in ("Released", "Available")
            and pv.get("spec", {}).get("storageClassName") == settings.storage_class
            and RWX in pv.get("spec", {}).get("accessModes", ())
        ),
        key=lambda pv: str(pv.get("metadata", {}).get("creationTimestamp", "")),
    )
    if not reusable:
        return [_claim_action(settings.namespace, settings, storage_class=settings.storage_class)]
    volume = reusable[-1]
    name = volume["metadata"]["name"]
    claim_ref = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": settings.namespace,
        "name": settings.claim_name,
        "uid": None,
        "resourceVersion": None,
    }
    size = volume["spec"].get("capacity", {}).get("storage", settings.storage_size)
    reason = "the cache files of an earlier installation: binding the new shared PVC to them"
    return [
        Action("patch", "PersistentVolume", name, body={"spec": {"claimRef": claim_ref}}, reason=reason),
        _claim_action(settings.namespace, settings, storage_class=settings.storage_class, volume_name=name, size=size),
    ]


def _retain(volume: JsonObject, settings: ControllerSettings) -> list[Action]:
    """Keep the shared files when the shared PVC goes (an uninstall deletes its namespace): Retain, labelled."""
    spec, labels = volume.get("spec", {}), volume.get("metadata", {}).get("labels") or {}
    if spec.get("persistentVolumeReclaimPolicy") == "Retain" and labels.get(CACHE_SOURCE_LABEL) == settings.claim_name:
        return []
    body = {
        "metadata": {"labels": {CACHE_SOURCE_LABEL: settings.claim_name}},
        "spec": {"persistentVolumeReclaimPolicy": "Retain"},
    }
    reason = "the cached files must outlive the shared PVC (an uninstall, a deleted namespace)"
    return [Action("patch", "PersistentVolume", volume["metadata"]["name"], body=body, reason=reason)]


_COMMON_VOLUME_SPEC_KEYS = {
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeMode",
    "volumeAttributesClassName",
}


def _stale_copy(claim: Claim, observed: Observed, settings: ControllerSettings) -> str:
    """Clone mode: why the namespace's PVC is bound to a copy of a shared volume that is not the current one."""
    copy = observed.clones.get(claim.volume_name)
    source = observed.source_volume
    if settings.volume_mode != "clone" or copy is None or source is None:
        return ""
    copied_from = (copy.get("metadata", {}).get("annotations") or {}).get(CLONE_OF_ANNOTATION, "")
    if copied_from == source["metadata"]["name"]:
        return ""
    return (
        f"PVC {claim.namespace}/{claim.name} is bound to {claim.volume_name}, a copy of the shared volume "
        f"{copied_from or '(unknown)'}, which is not the shared cache volume any more ({source['metadata']['name']}: "
        "its PVC was deleted and made again, e.g. by an uninstall of an earlier version). Its pods would not "
        f"find the cache. Once no pod uses it, `kubectl -n {claim.namespace} delete pvc {claim.name}`: the "
        "controller then gives the namespace a copy of the current one"
    )


def claim_state(claim: Claim, settings: ControllerSettings, *, now: datetime, managed: bool = False) -> NamespaceVolume:
    """Ready, pending or error (what to do) for a cache PVC; `managed`: the controller made it (node-local)."""
    where = f"{claim.namespace}/{claim.name}"
    managed = managed or settings.volume_mode != "existing"
    problem = unusable_claim(
        where, access_modes=claim.access_modes, phase=claim.phase, deleting=claim.deleting, managed=managed
    )
    if problem:
        return NamespaceVolume("error", problem)
    if claim.deleting:
        return NamespaceVolume("pending", f"PVC {where} is being deleted; it is created again once it is gone")
    if claim.phase == "Bound":
        return NamespaceVolume("ready")
    waited = now - claim.created
    if waited <= settings.volume_pending_deadline:
        return NamespaceVolume("pending", f"PVC {where} is waiting to be bound")
    return NamespaceVolume(
        "error",
        f"PVC {where} has been Pending for {int(waited.total_seconds())} s. `kubectl describe pvc -n "
        f"{claim.namespace} {claim.name}` says why; often the StorageClass cannot provide ReadWriteMany volumes.",
    )


def _create_for(namespace: str, observed: Observed, settings: ControllerSettings) -> list[Action]:
    if settings.volume_mode == "provision":
        return [_claim_action(namespace, settings, storage_class=settings.storage_class)]
    source = observed.source_volume
    source_claim = observed.claims.get(settings.namespace)
    if source is None or source_claim is None or source_claim.phase != "Bound":
        return []  # the shared PVC is not bound yet: the namespace waits (pending)
    name = clone_volume_name(settings.claim_name, namespace)
    existing = observed.clones.get(name)
    if existing is not None and existing.get("status", {}).get("phase") == "Released":
        return []  # _collect_released_clones deletes it in this pass; the next one makes it again
    actions = []
    if existing is None:
        body = clone_volume(source, namespace, settings)
        actions.append(Action("create", "PersistentVolume", name, body=body, serves=namespace))
    capacity = source["spec"].get("capacity", {}).get("storage", settings.storage_size)
    actions.append(_claim_action(namespace, settings, storage_class="", volume_name=name, size=capacity))
    return actions


def _collect_released_clones(observed: Observed) -> list[Action]:
    """A copy whose PVC is gone (namespace deleted, PVC removed, suffix changed) is only a pointer: remove it.

    Copies and node-local PVs have reclaim policy Retain, so deleting one never touches the cached files.
    The one of a namespace whose new PVC waits for it goes the same way: it is made again next pass.
    """
    return [
        Action("delete", "PersistentVolume", name, reason="its PVC is gone; the cached files are untouched")
        for name, volume in sorted((observed.clones | observed.node_volumes).items())
        if volume.get("status", {}).get("phase") == "Released"
    ]


def clone_volume_name(claim: str, namespace: str) -> str:
    digest = hashlib.sha256(f"{namespace}/{claim}".encode()).hexdigest()[:8]
    return f"{claim}-{namespace}-{digest}"


def clone_volume(source: JsonObject, namespace: str, settings: ControllerSettings) -> JsonObject:
    """A PV pointing at the same storage as `source`, pre-bound to the cache PVC in `namespace`."""
    spec = {k: v for k, v in source["spec"].items() if k not in _VOLUME_SPEC_KEYS_NOT_COPIED}
    spec.update(
        accessModes=[RWX],
        persistentVolumeReclaimPolicy="Retain",  # deleting the copy must never delete the shared files
        storageClassName="",
        claimRef={
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": namespace,
            "name": settings.claim_name,
        },
    )
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": clone_volume_name(settings.claim_name, namespace),
            "labels": {**MANAGED_BY, CLONE_NAMESPACE_LABEL: namespace},
            "annotations": {CLONE_OF_ANNOTATION: source["metadata"]["name"]},
        },
        "spec": spec,
    }


def _claim_action(
    namespace: str, settings: ControllerSettings, *, storage_class: str, volume_name: str = "", size: str = ""
) -> Action:
    spec: JsonObject = {
        "accessModes": [RWX],
        "storageClassName": storage_class,
        "resources": {"requests": {"storage": size or settings.storage_size}},
    }
    if volume_name:
        spec["volumeName"] = volume_name
    body = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": settings.claim_name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": spec,
    }
    return Action(
        "create", "PersistentVolumeClaim", settings.claim_name, namespace=namespace, body=body, serves=namespace
    )
