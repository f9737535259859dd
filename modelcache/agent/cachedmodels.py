"""The cache agent keeps its volume's entry of every CachedModel true (modelcache/contract/cachedmodel.py).

At every scan, from what `list_models` reads on the volume and the live pods the API lists:

- a model with a known source and no object gets one, named from its key and labelled adopted (no one
  has to create it: a pod that asked for the model is enough);
- the object's entry for this volume (``status.caches[volume=ns/claim]``) says its phase, version,
  size, progress and holder, failure message, last use and live pods; the summary fields are
  recomputed from all entries in the same write;
- an entry whose model left the volume (purged, removed) is dropped, and an adopted object with no
  entry left is deleted. An object someone created is never deleted here, and deleting an object never
  touches the files: the purge alone removes models (docs/operations.md).

Writes go to the status subresource with the resourceVersion read (another volume's agent writing
the same object meanwhile makes it a 409, and the write is redone on the fresh object), and only when
the entry changed, so an idle cache costs one list per scan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelcache.cache.inventory import CacheEntry
from modelcache.contract import JsonObject, cachedmodel
from modelcache.contract.cachedmodel import key_of
from modelcache.contract.pods import PodRef
from modelcache.contract.quantities import format_bytes
from modelcache.contract.wire import MODEL_KEY_LABEL

if TYPE_CHECKING:
    from modelcache.runtime.kube import Kube

log = logging.getLogger("modelcache.agent")
DECLARED = "(CachedModel)"  # the namespace of the pseudo-users that stand for declared objects in the purge
WRITE_ATTEMPTS = 4  # a write that meets a concurrent one is redone on the fresh object this many times


class WriteConflictError(Exception):
    """Every write met a concurrent one: the next scan tries again."""


@dataclass(slots=True)
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def phase_of(model: CacheEntry) -> tuple[cachedmodel.Phase, str, str]:
    """(phase, reason, message) of a model as its traces on the volume show it."""
    if model.state == "ready":
        return "Ready", "Ready", ""
    if model.state == "downloading" and model.download is not None:
        progress = _progress_text(model)
        return (
            "Downloading",
            "Downloading",
            f"downloading by {model.download.holder}" + (f": {progress}" if progress else ""),
        )
    if model.state == "corrupt":
        return "Failed", "Corrupt", f"{model.problem}; `modelcache verify --repair` fetches what is damaged again"
    outcome = model.last_outcome
    if outcome is not None and outcome.kind == "failed":
        return "Failed", "FetchFailed", f"{outcome.reason or 'failed'}: {outcome.message}"[:2048]
    return "Pending", "Interrupted", f"{model.problem}; the next pod that asks for it resumes the download"


def _progress_text(model: CacheEntry) -> str:
    download = model.download
    if download is None or not download.bytes_total:
        return ""
    done, total = format_bytes(download.bytes_done), format_bytes(download.bytes_total)
    return f"{download.percent} % ({done} of {total})"


def entry_for(model: CacheEntry, *, volume: str, pods: int, now: float, before: JsonObject | None) -> JsonObject:
    """This volume's status entry for a model; `before` is the entry written last time (or None)."""
    phase, reason, message = phase_of(model)
    entry: JsonObject = {"volume": volume, "phase": phase, "pods": pods}
    if cachedmodel.node_of(volume):
        entry["node"] = cachedmodel.node_of(volume)
    if model.version:
        entry["version"] = model.version
    if model.state == "ready":
        entry |= {"sizeBytes": model.size, "files": model.files}
    if model.download is not None and phase == "Downloading":
        entry |= {"bytesDone": model.download.bytes_done, "bytesTotal": model.download.bytes_total}
        entry["holder"] = model.download.holder
    if message:
        entry["message"] = message[:2048]
    if model.last_used is not None:
        entry["lastUsed"] = rfc3339(model.last_used)
    entry["conditions"] = [
        condition(phase == "Ready", reason, message or "ready", (before or {}).get("conditions"), now)
    ]
    unchanged = before is not None and _without_times(before) == _without_times(entry)
    entry["updatedAt"] = str(before["updatedAt"]) if unchanged and before else rfc3339(now)
    return entry


def condition(ready: bool, reason: str, message: str, before: Any, now: float) -> JsonObject:
    """The Ready condition; its lastTransitionTime moves only when its status does."""
    status = "True" if ready else "False"
    previous = next((c for c in before or [] if isinstance(c, dict) and c.get("type") == cachedmodel.READY), None)
    since = previous["lastTransitionTime"] if previous and previous.get("status") == status else rfc3339(now)
    return {"type": cachedmodel.READY, "status": status, "reason": reason, "message": message[:32768],
            "lastTransitionTime": since}  # fmt: skip


def _without_times(entry: JsonObject) -> JsonObject:
    data = {k: v for k, v in entry.items() if k != "updatedAt"}
    data["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in entry.get("conditions", [])
    ]
    return data


def status_for(
    key: str, entries: list[JsonObject], before: JsonObject, now: float, expected: frozenset[str] = frozenset()
) -> JsonObject:
    """The whole status: the entries, and the summary that follows from them (and from the volumes a
    declared object expects)."""
    entries = sorted(entries, key=lambda e: str(e["volume"]))
    summary = cachedmodel.summarize(entries, expected)
    ready = [e for e in entries if e.get("phase") == "Ready"]
    status: JsonObject = {"key": key, "phase": summary.phase, "pods": sum(int(e.get("pods", 0)) for e in entries)}
    status["conditions"] = [condition(summary.ready, summary.reason, summary.message, before.get("conditions"), now)]
    known = ready or [e for e in entries if e.get("version")]
    if known and known[0].get("version"):
        status["version"] = known[0]["version"]
    if ready:
        status |= {"sizeBytes": ready[0]["sizeBytes"], "files": ready[0]["files"]}
        status["size"] = format_bytes(int(ready[0]["sizeBytes"]))
    downloading = [e for e in entries if e.get("phase") == "Downloading" and e.get("bytesTotal")]
    if downloading:
        first = downloading[0]
        done, total = int(first["bytesDone"]), int(first["bytesTotal"])
        status["progress"] = f"{done * 100 // total} % ({format_bytes(done)} of {format_bytes(total)})"
    if any(cachedmodel.node_of(str(e["volume"])) for e in entries):
        status["nodes"] = sum(1 for e in ready if cachedmodel.node_of(str(e["volume"])))
    used = [str(e["lastUsed"]) for e in entries if e.get("lastUsed")]
    if used:
        status["lastUsed"] = max(used)
    status["caches"] = entries
    return status


def adopted_object(model: CacheEntry) -> JsonObject:
    """The object the agent makes for a model that pods asked for and nobody declared."""
    labels = {cachedmodel.ADOPTED_LABEL: "true", MODEL_KEY_LABEL: model.key}
    return {
        "apiVersion": cachedmodel.API_VERSION,
        "kind": cachedmodel.KIND,
        "metadata": {"name": cachedmodel.name_for_key(model.key), "labels": labels},
        "spec": {"source": model.source, "include": list(model.include)},
    }


def declared_users(api: Kube) -> dict[str, list[PodRef]]:
    """Model key -> the CachedModel objects someone declared for it, as users the purge must respect.

    A declared model is kept warm: no purge removes it, whatever its last use, until its object is deleted.
    They count as users with no pin record, so every version of such a model stays (modelcache.cache.pins).
    """
    from modelcache.runtime.kube import ApiError, path

    try:
        listed = api.get(path(cachedmodel.API_VERSION, cachedmodel.PLURAL)).get("items", [])
    except ApiError as err:
        if err.status == 404:
            return {}  # no CRD: nothing declared
        raise
    users: dict[str, list[PodRef]] = {}
    for obj in listed:
        if (obj["metadata"].get("labels") or {}).get(cachedmodel.ADOPTED_LABEL) == "true":
            continue
        key = key_of(obj)
        if key:
            users.setdefault(key, []).append(PodRef(DECLARED, obj["metadata"]["name"]))
    return users


class CachedModels:
    """One volume's entries, kept by its agent (the Lease holder: one writer per volume)."""

    def __init__(self, api: Kube, *, volume: str, mode: str = "existing", clock: Any = time.time) -> None:
        """`mode`: the cluster's volume mode, which maps the namespaces a declared object names to volumes."""
        self.api, self.volume, self.mode, self.clock = api, volume, mode, clock
        self.claim = volume.partition("/")[2]
        self.listed: list[JsonObject] | None = None  # the objects the last sync listed (the warm-up reads them)

    def expected(self, obj: JsonObject) -> frozenset[str]:
        return cachedmodel.declared_volumes(obj, mode=self.mode, claim=self.claim, shared=self.volume)

    def sync(self, models: Sequence[CacheEntry], live: Mapping[str, Sequence[PodRef]]) -> SyncReport:
        from modelcache.runtime.kube import path

        report = SyncReport()
        listed = self.api.get(path(cachedmodel.API_VERSION, cachedmodel.PLURAL)).get("items", [])
        self.listed = listed
        by_key = {key: obj for obj in listed if (key := key_of(obj))}
        on_volume = {m.key for m in models}
        for model in models:
            obj = by_key.get(model.key)
            if obj is None and not model.source:
                continue  # nothing names its source yet (an attempt without records): no object to make
            self._guarded(report, model.key, lambda m=model, o=obj: self._keep(m, o, live, report))
        for key, obj in by_key.items():
            if key not in on_volume and _entry(obj, self.volume) is not None:
                self._guarded(report, key, lambda k=key, o=obj: self._drop(k, o, report))
        return report

    def _guarded(self, report: SyncReport, key: str, work: Any) -> None:
        from modelcache.runtime.kube import API_ERRORS

        try:
            work()
        except (*API_ERRORS, WriteConflictError) as err:
            report.failed.append(key)
            log.warning("could not update the CachedModel of %s: %s", key, str(err)[:500], extra={"model_key": key})

    def _keep(
        self, model: CacheEntry, obj: JsonObject | None, live: Mapping[str, Sequence[PodRef]], report: SyncReport
    ) -> None:
        if obj is None:
            obj = self._create(model, report)
            if obj is None:
                return
        pods = len(live.get(model.key, ()))

        def change(current: JsonObject) -> JsonObject | None:
            before = _entry(current, self.volume)
            entry = entry_for(model, volume=self.volume, pods=pods, now=self.clock(), before=before)
            if before == entry and (current.get("status") or {}).get("key") == model.key:
                return None
            others = [e for e in _entries(current) if e.get("volume") != self.volume]
            before_status = current.get("status") or {}
            return status_for(model.key, [*others, entry], before_status, self.clock(), self.expected(current))

        if self._write(obj, change):
            report.updated.append(obj["metadata"]["name"])

    def _create(self, model: CacheEntry, report: SyncReport) -> JsonObject | None:
        from modelcache.runtime.kube import ApiError, path

        body = adopted_object(model)
        name = body["metadata"]["name"]
        try:
            created = self.api.create(path(cachedmodel.API_VERSION, cachedmodel.PLURAL), body)
        except ApiError as err:
            if err.status != 409:
                raise
            existing = self.api.read(path(cachedmodel.API_VERSION, cachedmodel.PLURAL, name))
            if existing is None or key_of(existing) != model.key:
                log.warning(
                    "the CachedModel %s exists and stands for another model: %s left without one", name, model.key
                )
                return None
            return existing
        report.created.append(name)
        log.info("made the CachedModel %s for %s (%s)", name, model.source, model.key, extra={"model_key": model.key})
        return created

    def _drop(self, key: str, obj: JsonObject, report: SyncReport) -> None:
        from modelcache.runtime.kube import ApiError, path

        name = obj["metadata"]["name"]
        others = [e for e in _entries(obj) if e.get("volume") != self.volume]
        adopted = (obj["metadata"].get("labels") or {}).get(cachedmodel.ADOPTED_LABEL) == "true"
        if not others and adopted:
            precondition = {"preconditions": {"resourceVersion": obj["metadata"]["resourceVersion"]}}
            try:
                self.api.request("DELETE", path(cachedmodel.API_VERSION, cachedmodel.PLURAL, name), body=precondition)
            except ApiError as err:
                if err.status not in (404, 409):
                    raise
                return  # gone already, or another agent wrote an entry meanwhile: the next scan looks again
            report.deleted.append(name)
            log.info("deleted the CachedModel %s: no cache volume holds %s any more", name, key)
            return

        def change(current: JsonObject) -> JsonObject | None:
            remaining = [e for e in _entries(current) if e.get("volume") != self.volume]
            return status_for(key, remaining, current.get("status") or {}, self.clock(), self.expected(current))

        if self._write(obj, change):
            report.updated.append(name)

    def _write(self, obj: JsonObject, change: Any) -> bool:
        """PUT the changed status, redone on the fresh object after a conflict; False when nothing changed."""
        from modelcache.runtime.kube import ApiError, path

        name = obj["metadata"]["name"]
        where = path(cachedmodel.API_VERSION, cachedmodel.PLURAL, name)
        current = obj
        for _ in range(WRITE_ATTEMPTS):
            status = change(current)
            if status is None:
                return False
            try:
                self.api.replace(where + "/status", {**current, "status": status})
                return True
            except ApiError as err:
                if err.status != 409:
                    raise
            fresh = self.api.read(where)
            if fresh is None:
                return False
            current = fresh
        raise WriteConflictError(f"the CachedModel {name} changed under each of {WRITE_ATTEMPTS} writes")


def _entries(obj: JsonObject) -> list[JsonObject]:
    return [e for e in (obj.get("status") or {}).get("caches") or [] if isinstance(e, dict)]


def _entry(obj: JsonObject, volume: str) -> JsonObject | None:
    return next((e for e in _entries(obj) if e.get("volume") == volume), None)
