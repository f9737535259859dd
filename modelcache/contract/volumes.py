"""The volume status document: what the controller knows about cache volumes, as the webhook reads it.

Standard library only: the controller writes it into one ConfigMap; the webhook watches that one object
and decides from it, without API calls of its own in the admission hot path. Per namespace a state:

- ``ready``: the cache PVC exists, is ReadWriteMany and Bound;
- ``pending``: the controller is creating or binding it (within the deadline): pods wait briefly;
- ``error``: it cannot be served; the message says what to configure. The webhook denies with it.

A namespace missing from the document has no cache PVC yet: with ``existing`` volumes that is a denial;
with ``provision`` and ``clone`` the controller creates one when the first pod appears.

Node-local caches (``node_local``: ``fallback`` or ``always``): a namespace marked ``nodeLocal`` mounts the
PVC named ``nodeClaim`` instead, bound to a hostPath PersistentVolume, so that every node keeps its own
copy of each model on its own disk. ``fallback`` serves the namespaces the shared volume cannot (no
ReadWriteMany storage); ``always`` serves every namespace so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

STATUS_CONFIGMAP = "modelcache-volumes"
STATUS_KEY = "status.json"
VolumeMode = Literal["existing", "provision", "clone"]
VOLUME_MODES: tuple[VolumeMode, ...] = ("existing", "provision", "clone")
NodeLocal = Literal["off", "fallback", "always"]
NODE_LOCAL_CHOICES: tuple[NodeLocal, ...] = ("off", "fallback", "always")
NODE_CLAIM_SUFFIX = "-node"  # the node-local PVC of a namespace is named <claim>-node
NamespaceState = Literal["ready", "pending", "error"]
# The controller rewrites the document at least this often; an older one means it is not running.
HEARTBEAT = timedelta(seconds=60)
STALE_AFTER = timedelta(minutes=5)


RWX = "ReadWriteMany"


def unusable_claim(where: str, *, access_modes: tuple[str, ...], phase: str, deleting: bool, managed: bool) -> str:
    """Why a cache PVC (`namespace/name`) cannot serve pods whatever its binding does next; "" when it can.

    The controller and the webhook's own view of the PVCs both decide with this: a pod on several nodes
    needs ReadWriteMany; a PVC being deleted or that lost its volume is never going to be mounted.
    `managed`: the controller made it (and makes it again), rather than the operator.
    """
    if deleting:
        if managed:
            return ""  # pending: created again once it is gone
        return f"PVC {where} is being deleted; create it again once it is gone"
    if RWX not in access_modes:
        fix = "delete it and the controller creates a ReadWriteMany one" if managed else "recreate it as ReadWriteMany"
        return (
            f"PVC {where} has access modes {', '.join(access_modes) or 'none'}; pods on several nodes share "
            f"the cache, so it must be ReadWriteMany ({fix})"
        )
    if phase == "Lost":
        return f"PVC {where} lost its volume (phase Lost); see kubectl describe pvc"
    return ""


class VolumeDeniedError(Exception):
    """A pod in this namespace cannot get a usable cache volume; str(err) says what to configure."""


@dataclass(frozen=True, slots=True)
class NamespaceVolume:
    state: NamespaceState
    message: str = ""
    node_local: bool = False  # its pods mount the node-local PVC (each node's own copy)


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeStatus:
    """One consistent snapshot written by the controller."""

    mode: VolumeMode
    claim: str
    updated: datetime
    controller_namespace: str = "modelcache-system"
    problem: str = ""  # a cluster-wide reason why no namespace can be served (from the shared volume)
    namespaces: dict[str, NamespaceVolume] = field(default_factory=dict)
    node_local: NodeLocal = "off"
    node_claim: str = ""  # the node-local PVC's name (in every namespace), when node_local is not off

    def is_node_local(self, namespace: str) -> bool:
        """Whether pods of `namespace` get (or will get) the node-local cache rather than the shared one."""
        entry = self.namespaces.get(namespace)
        if entry is not None:
            return entry.node_local
        return self.node_local == "always" or (
            self.node_local == "fallback" and (self.mode == "existing" or bool(self.problem))
        )

    def claim_for(self, namespace: str, *, now: datetime) -> str:
        """The PVC name to mount in `namespace`, or VolumeDenied with what to configure."""
        entry = self.namespaces.get(namespace)
        if self.is_node_local(namespace):
            return self._node_claim_for(namespace, entry, now=now)
        if entry is not None and entry.state == "ready":
            return self.claim
        if self.problem:
            raise VolumeDeniedError(f"modelcache: no cache volume can be provided: {self.problem}")
        if entry is not None and entry.state == "error":
            raise VolumeDeniedError(f"modelcache: no usable cache volume in namespace {namespace}: {entry.message}")
        if entry is None and self.mode == "existing":
            raise VolumeDeniedError(
                f"modelcache: namespace {namespace} has no PersistentVolumeClaim {self.claim!r} for the model "
                f"cache. Create a ReadWriteMany PVC named {self.claim} in {namespace} (docs/install.md, "
                "'existing' volumes), or have the platform team switch volumes to provision or clone. To run "
                "without the cache, set AIOLI_DISABLE_MODEL_CACHE=true in a container of the pod."
            )
        return self._unless_stale(namespace, self.claim, now=now)

    def _node_claim_for(self, namespace: str, entry: NamespaceVolume | None, *, now: datetime) -> str:
        if entry is not None and entry.state == "ready":
            return self.node_claim
        if entry is not None and entry.state == "error":
            raise VolumeDeniedError(
                f"modelcache: no usable node-local cache volume in namespace {namespace}: {entry.message}"
            )
        return self._unless_stale(namespace, self.node_claim, now=now)

    def _unless_stale(self, namespace: str, claim: str, *, now: datetime) -> str:
        """A PVC the controller is creating or binding: the pod waits for it, unless the controller is gone."""
        age = now - self.updated
        if age > STALE_AFTER:
            raise VolumeDeniedError(
                f"modelcache: the cache volume for namespace {namespace} is not ready and the modelcache "
                f"controller has not reported for {int(age.total_seconds())} s, so it would never be created. "
                f"Check the modelcache-controller pods in namespace {self.controller_namespace}."
            )
        return claim  # pending or about to be created: the pod waits for the PVC, briefly

    def to_json(self) -> str:
        document = {
            "mode": self.mode,
            "claim": self.claim,
            "updated": self.updated.astimezone(UTC).isoformat(),
            "controllerNamespace": self.controller_namespace,
            "problem": self.problem,
            "nodeLocal": self.node_local,
            "nodeClaim": self.node_claim,
            "namespaces": {
                name: {"state": entry.state, "message": entry.message} | _node_local_field(entry)
                for name, entry in sorted(self.namespaces.items())
            },
        }
        return json.dumps(document, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VolumeStatus:
        """Parse a document; ValueError names what is wrong."""
        try:
            document = json.loads(text)
            mode = document["mode"]
            if mode not in VOLUME_MODES:
                raise ValueError(f"mode {mode!r} is not one of {', '.join(VOLUME_MODES)}")
            namespaces = {}
            for name, entry in document.get("namespaces", {}).items():
                if entry["state"] not in ("ready", "pending", "error"):
                    raise ValueError(f"namespace {name}: state {entry['state']!r} is not ready, pending or error")
                namespaces[str(name)] = NamespaceVolume(
                    entry["state"], str(entry.get("message", "")), node_local=entry.get("nodeLocal") is True
                )
            node_local = document.get("nodeLocal", "off")
            if node_local not in NODE_LOCAL_CHOICES:
                raise ValueError(f"nodeLocal {node_local!r} is not one of {', '.join(NODE_LOCAL_CHOICES)}")
            updated = datetime.fromisoformat(document["updated"])
            if updated.tzinfo is None:
                raise ValueError("updated has no time zone")
            return cls(
                mode=mode,
                claim=str(document["claim"]),
                updated=updated,
                controller_namespace=str(document.get("controllerNamespace", "modelcache-system")),
                problem=str(document.get("problem", "")),
                namespaces=namespaces,
                node_local=node_local,
                node_claim=str(document.get("nodeClaim", "")),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as err:
            raise ValueError(f"not a volume status document: {err!r}") from err


def _node_local_field(entry: NamespaceVolume) -> dict[str, bool]:
    return {"nodeLocal": True} if entry.node_local else {}
