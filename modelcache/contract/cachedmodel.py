"""The CachedModel resource: a model as a Kubernetes object, with a status entry per cache volume.

Cluster-scoped (`kubectl get cachedmodels`), group ``modelcache.io``, version ``v1alpha1`` (its fields
may still change; docs/operations.md, "Models as Kubernetes objects"). The cache agent beside each cache
volume keeps its own entry of ``status.caches`` true, from what it finds on the volume, and the summary
fields above it (phase, the ``Ready`` condition, size, progress, pods) follow from all entries, so
``kubectl wait --for=condition=Ready cachedmodel/NAME`` works. Its CRD is
manifests/base/cachedmodel-crd.yaml; every name here is checked against it by the manifest tests.

The object of a model a pod asked for is named from the model key (``name_for_key``), so the mapping
is stable and needs no lookup: `modelcache ls` shows it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from modelcache.contract import JsonObject

GROUP = "modelcache.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CachedModel"
PLURAL = "cachedmodels"
CRD_NAME = f"{PLURAL}.{GROUP}"
# Set on the objects the agent makes for models that pods asked for (nobody declared them): the agent
# deletes those once no cache holds the model; an object a person or a tool created is never deleted.
ADOPTED_LABEL = "modelcache.io/adopted"
READY = "Ready"

Phase = Literal["Pending", "Downloading", "Ready", "Failed"]
PHASES: tuple[Phase, ...] = ("Pending", "Downloading", "Ready", "Failed")

_NOT_IN_NAME = re.compile(r"[^a-z0-9-]")


def name_for_key(key: str) -> str:
    """The object name of a model key: the key with ``_`` and ``.`` as ``-`` (a DNS-1123 label).

    Keys are at most 63 characters of ``[a-z0-9._-]``, start with a letter or digit and end with their
    16 hex digits of hash, so the name is a valid label; two keys that differ only in ``_`` and ``.``
    also differ in their hash, so names do not collide.
    """
    return _NOT_IN_NAME.sub("-", key.replace("_", "-").replace(".", "-"))


NODE_PREFIX = "node:"  # node names have no ':', namespaces neither: the two kinds of entries never collide


def volume_id(namespace: str, claim: str) -> str:
    """How a status entry names its cache volume: the PVC, as namespace/name."""
    return f"{namespace}/{claim}"


def node_volume_id(node: str) -> str:
    """How a status entry names a node's own cache (node-local mode): node:<name>."""
    return NODE_PREFIX + node


def node_of(volume: str) -> str:
    """The node of a node-local entry's volume ("" for a PVC's)."""
    return volume.removeprefix(NODE_PREFIX) if volume.startswith(NODE_PREFIX) else ""


@dataclass(frozen=True, slots=True)
class Summary:
    """The fields above the per-volume entries, which follow from them."""

    phase: Phase
    ready: bool
    reason: str
    message: str


def summarize(entries: Sequence[JsonObject], expected: frozenset[str] = frozenset()) -> Summary:
    """Ready when ready in every cache volume that has an entry, and in every `expected` one (the volumes
    of the namespaces a declared object names); else the most telling phase."""
    phases = [str(e.get("phase", "Pending")) for e in entries]
    missing = sorted(expected - {str(e.get("volume")) for e in entries})
    if entries and all(p == "Ready" for p in phases) and not missing:
        where = ", ".join(str(e.get("volume")) for e in entries)
        return Summary("Ready", True, "Ready", f"ready in {where}")
    for phase, reason in (("Failed", "FetchFailed"), ("Downloading", "Downloading")):
        found = [e for e in entries if e.get("phase") == phase]
        if found:
            first = found[0]
            text = str(first.get("message") or phase.lower())
            return Summary(phase, False, reason, f"{first.get('volume')}: {text}")  # type: ignore[arg-type]
    if not entries:
        return Summary("Pending", False, "NotInAnyCache", "no cache volume holds this model yet")
    if missing:
        return Summary("Pending", False, "Pending", f"not in {', '.join(missing)} yet (its fetch Job is on the way)")
    pending = next(e for e in entries if e.get("phase") != "Ready")
    return Summary("Pending", False, "Pending", f"{pending.get('volume')}: {pending.get('message') or 'pending'}")


def declared_volumes(obj: JsonObject, *, mode: str, claim: str, shared: str) -> frozenset[str]:
    """The volumes of the namespaces a declared object names: `shared` for them all in clone mode; none for
    a node's own cache (`mode` node-local), where spec.nodeSelector, not spec.namespaces, says where."""
    if mode == "node-local":
        return frozenset()
    namespaces = (obj.get("spec") or {}).get("namespaces") or []
    if mode == "clone":
        return frozenset({shared}) if namespaces else frozenset()
    return frozenset(volume_id(str(namespace), claim) for namespace in namespaces)


def key_of(obj: JsonObject) -> str:
    """The model key an object stands for: its status says, else its spec (a declared object)."""
    from modelcache.contract.errors import ContractError
    from modelcache.contract.keys import model_key
    from modelcache.contract.sources import parse_source

    status_key = (obj.get("status") or {}).get("key")
    if status_key:
        return str(status_key)
    spec = obj.get("spec") or {}
    try:
        source = parse_source(str(spec.get("source", "")), allow_http=True)
    except ContractError:
        return ""
    return model_key(source, tuple(str(p) for p in spec.get("include") or ()))


def declared(
    source: str, key: str, *, include: tuple[str, ...], namespaces: tuple[str, ...], secret: str | None
) -> JsonObject:
    """A CachedModel that asks for the model in the caches of `namespaces` (`modelcache prefetch --declare`).

    Named from the key like the objects the agents make, so the agents and a second declaration meet it."""
    spec: JsonObject = {"source": source, "include": list(include), "namespaces": list(namespaces)}
    if secret:
        spec["secret"] = secret
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name_for_key(key)}, "spec": spec}
