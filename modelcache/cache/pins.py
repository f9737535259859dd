"""Which version each pod reads: a record per pod of the model directory its fetcher pinned for it.

The pod's own pin (its MODEL_PATH) is a link in an emptyDir the volume cannot see, so the fetcher also
leaves ``.modelcache/pins/<hash>.json`` naming the pod (namespace, name, UID) and the directory
(modelcache.cache.usage writes it, on the cache-hit path; this module reads them). Garbage
collection keeps every directory a live pod's record names, and every version of a model a live pod
uses without a matching record (a pod started by an older fetcher, or a record that could not be
written): which version such a pod reads is unknown, so nothing of that model goes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from modelcache.cache.files import list_names
from modelcache.cache.layout import CacheLayout
from modelcache.contract.pods import PodRef

MAX_RECORD_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Pin:
    """One pod's record: the model directory (relative to the root) its fetcher pinned."""

    namespace: str
    pod: str
    uid: str
    key: str
    path: str
    at: float

    def matches(self, pod: PodRef) -> bool:
        same = (self.namespace, self.pod) == (pod.namespace, pod.name)
        return same and (not self.uid or not pod.uid or self.uid == pod.uid)


@dataclass(frozen=True, slots=True)
class LiveUse:
    """What live pods need kept: the keys they use, the directories they pin, and the keys of pods whose
    pin is unknown (every version of those stays)."""

    keys: frozenset[str] = frozenset()
    pinned: frozenset[str] = frozenset()
    unknown_pin_keys: frozenset[str] = frozenset()
    pods: frozenset[PodRef] = frozenset()

    def keeps_every_version_of(self, key: str) -> bool:
        return key in self.unknown_pin_keys


def read_pins(layout: CacheLayout) -> list[tuple[str, Pin]]:
    """Every readable record, with its file name."""
    pins = []
    for name in sorted(list_names(layout.pins)):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        try:
            with (layout.pins / name).open("rb") as handle:
                raw = handle.read(MAX_RECORD_BYTES + 1)
            data = json.loads(raw)
            pin = Pin(
                namespace=data["namespace"],
                pod=data["pod"],
                uid=data.get("uid", ""),
                key=data["key"],
                path=data["path"],
                at=float(data.get("at", 0)),
            )
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
        if all(isinstance(getattr(pin, f), str) for f in ("namespace", "pod", "uid", "key", "path")):
            pins.append((name, pin))
    return pins


def live_use(layout: CacheLayout, live_pods: Mapping[str, Sequence[PodRef]]) -> LiveUse:
    """What the live pods (model key -> pods, from the API) need kept, from their pin records."""
    pins = [pin for _, pin in read_pins(layout)]
    pinned: set[str] = set()
    unknown: set[str] = set()
    for key, pods in live_pods.items():
        for pod in pods:
            found = [pin.path for pin in pins if pin.key == key and pin.matches(pod)]
            pinned.update(found)
            if not found:
                unknown.add(key)
    every = frozenset(pod for pods in live_pods.values() for pod in pods)
    return LiveUse(frozenset(live_pods), frozenset(pinned), frozenset(unknown), every)


def pods_of(live_pods: Mapping[str, Iterable[PodRef]], key: str) -> list[str]:
    return sorted(str(pod) for pod in live_pods.get(key, ()))
