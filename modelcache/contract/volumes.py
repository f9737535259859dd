"""The volume status document: what the controller knows about cache volumes, as the webhook reads it.

Standard library only: the controller writes it into one ConfigMap; the webhook watches that one object
and decides from it, without API calls of its own in the admission hot path. Per namespace a state:

- ``ready``: the cache PVC exists, is ReadWriteMany and Bound;
- ``pending``: the controller is creating or binding it (within the deadline): pods wait briefly;
- ``error``: it cannot be served; the message says what to configure. The webhook denies with it.

A namespace missing from the document has no cache PVC yet: with ``existing`` volumes that is a denial;
with ``provision`` and ``clone`` the controller creates one when the first pod appears.
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


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeStatus:
    """One consistent snapshot written by the controller."""

    mode: VolumeMode
    claim: str
    updated: datetime
    controller_namespace: str = "modelcache-system"
    problem: str = ""  # a cluster-wide reason why no namespace can be served
    namespaces: dict[str, NamespaceVolume] = field(default_factory=dict)

    def claim_for(self, namespace: str, *, now: datetime) -> str:
        """The PVC name to mount in `namespace`, or VolumeDenied with what to configure."""
        entry = self.namespaces.get(namespace)
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
        age = now - self.updated
        if age > STALE_AFTER:
            raise VolumeDeniedError(
                f"modelcache: the cache volume for namespace {namespace} is not ready and the modelcache "
                f"controller has not reported for {int(age.total_seconds())} s, so it would never be created. "
                f"Check the modelcache-controller pods in namespace {self.controller_namespace}."
            )
        return self.claim  # pending or about to be created: the pod waits for the PVC, briefly

    def to_json(self) -> str:
        document = {
            "mode": self.mode,
            "claim": self.claim,
            "updated": self.updated.astimezone(UTC).isoformat(),
            "controllerNamespace": self.controller_namespace,
            "problem": self.problem,
            "namespaces": {
                name: {"state": entry.state, "message": entry.message}
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
                namespaces[str(name)] = NamespaceVolume(entry["state"], str(entry.get("message", "")))
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
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as err:
            raise ValueError(f"not a volume status document: {err!r}") from err
