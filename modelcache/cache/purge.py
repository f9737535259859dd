"""Purging unused models: `plan_purge` decides (pure), `run_purge` carries a round out.

MLIS's semantics: a model goes when it has not been used for `purgeUnusedCachedModelsAfter`. Done
safely: never while a live pod references it, never while its lock is held (a download or another
removal), and a capacity watermark may evict the least recently used unused models early. The removal
itself (modelcache.cache.removal) re-checks everything under the model's lock; the leftovers go by
modelcache.cache.collection. `modelcache purge` and the cache agent both run `run_purge`; neither this
module nor anything it imports talks to a source.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from modelcache.cache.collection import Ages, Leftover, collect, plan_collection
from modelcache.cache.inventory import CacheEntry, free_space, list_models
from modelcache.cache.layout import CacheLayout
from modelcache.cache.owners import Identity
from modelcache.cache.pins import LiveUse, live_use, pods_of
from modelcache.cache.removal import RemovalCheck, RemovalRefusedError, remove_model
from modelcache.contract.pods import PodRef
from modelcache.contract.quantities import format_bytes, format_duration, size_bytes

log = logging.getLogger(__name__)
LivePods = Callable[[], Mapping[str, Sequence[PodRef]]]  # model key -> the live pods using it


class Cause(Enum):
    """Why a model goes or stays."""

    UNUSED = "unused"  # goes: not used for the TTL
    WATERMARK = "watermark"  # goes: free space is below the watermark, least recently used first
    IN_USE = "in_use"  # stays: a live pod uses it
    LOCKED = "locked"  # stays: a download or removal holds its lock
    NOT_READY = "not_ready"  # stays: its leftovers are collected once stale
    NO_RECORD = "no_record"  # stays: nothing says when it was used or published
    RECENT = "recent"  # stays: used within the TTL


@dataclass(frozen=True, slots=True)
class PurgePolicy:
    unused_for: float  # seconds: MLIS's purgeUnusedCachedModelsAfter
    min_free_bytes: int = 0  # capacity watermark: evict LRU unused models while free space is below this


@dataclass(frozen=True, slots=True)
class Decision:
    model: CacheEntry
    cause: Cause
    reason: str  # the cause, for people

    @property
    def key(self) -> str:
        return self.model.key

    @property
    def remove(self) -> bool:
        return self.cause in (Cause.UNUSED, Cause.WATERMARK)


@dataclass(slots=True)
class PurgeItem:
    """One model's decision and what came of it."""

    decision: Decision
    removed: bool = False
    refused: str = ""  # why a model chosen for removal stayed
    kept_at_removal: bool = False  # chosen, but the last check under its lock kept it (a pod started)
    freed_bytes: int = 0
    deferred: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PurgeReport:
    items: list[PurgeItem]
    leftovers: list[Leftover]
    dry_run: bool
    stopped: bool  # the round was told to stop before its end (the agent lost its Lease, or SIGTERM)
    deferred: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        if self.dry_run:
            models = sum(i.decision.model.size for i in self.items if i.decision.remove)
        else:
            models = sum(i.freed_bytes for i in self.items)
        return models + sum(item.bytes for item in self.leftovers)

    def to_json(self) -> dict[str, Any]:
        """The report as `modelcache purge --json` prints it."""
        models = []
        for item in self.items:
            decision = item.decision
            entry: dict[str, Any] = {"key": decision.key, "source": decision.model.source}
            entry |= {"remove": decision.remove and (self.dry_run or item.removed), "cause": decision.cause.value}
            entry |= {"reason": decision.reason, "freed_bytes": item.freed_bytes, "deferred": item.deferred}
            if item.refused:
                entry |= {"refused": item.refused, "kept_at_removal": item.kept_at_removal}
            models.append(entry)
        leftovers = [
            {
                "path": i.path,
                "kind": i.kind.name.lower(),
                "reason": i.reason,
                "bytes": i.bytes,
                "model_key": i.model_key,
            }
            for i in self.leftovers
        ]
        return {
            "models": models,
            "leftovers": leftovers,
            "freed_bytes": self.freed_bytes,
            "dry_run": self.dry_run,
            "stopped": self.stopped,
            "deferred": self.deferred,
        }


def plan_purge(
    models: Sequence[CacheEntry],
    *,
    in_use: Mapping[str, Sequence[object]],
    now: float,
    policy: PurgePolicy,
    free_bytes: int,
) -> list[Decision]:
    """One decision per model, with its cause; `in_use` maps keys to the live pods that use them."""
    decisions = {m.key: _decide(m, sorted(str(p) for p in in_use.get(m.key, ())), now, policy) for m in models}
    freed = sum(d.model.size for d in decisions.values() if d.remove)
    if policy.min_free_bytes and free_bytes + freed < policy.min_free_bytes:
        evictable = [d.model for d in decisions.values() if d.cause is Cause.RECENT]
        for model in sorted(evictable, key=lambda m: (m.idle_since or 0.0, m.key)):
            if free_bytes + freed >= policy.min_free_bytes:
                break
            freed += model.size
            decisions[model.key] = Decision(
                model,
                Cause.WATERMARK,
                f"free space {format_bytes(free_bytes)} is below the watermark {format_bytes(policy.min_free_bytes)}; "
                f"least recently used (idle {format_duration(now - (model.idle_since or now))})",
            )
    return [decisions[m.key] for m in models]


def _decide(model: CacheEntry, pods: Sequence[str], now: float, policy: PurgePolicy) -> Decision:
    if model.state == "downloading" or model.locked:
        holder = model.download.holder if model.download else "another process"
        return Decision(model, Cause.LOCKED, f"locked by {holder}: a download or removal is under way")
    if pods:
        shown = ", ".join(pods[:3]) + (f" and {len(pods) - 3} more" if len(pods) > 3 else "")
        return Decision(model, Cause.IN_USE, f"in use by {len(pods)} live pod(s): {shown}")
    if model.state == "interrupted":
        return Decision(model, Cause.NOT_READY, "not ready: its leftovers are cleaned once they are stale")
    idle_since = model.idle_since
    if idle_since is None:
        return Decision(model, Cause.NO_RECORD, "no record of use or publication")
    idle = now - idle_since
    ttl = format_duration(policy.unused_for)
    if idle >= policy.unused_for:
        what = "corrupt and unused" if model.state == "corrupt" else "unused"
        return Decision(model, Cause.UNUSED, f"{what} for {format_duration(idle)} (purge after {ttl})")
    return Decision(model, Cause.RECENT, f"used {format_duration(idle)} ago (purge after {ttl})")


@dataclass(frozen=True, slots=True)
class Round:
    """What one purge round is told: the policy, the ages of leftovers, and how to ask for live pods."""

    policy: PurgePolicy
    ages: Ages
    live_pods: LivePods
    identity: Identity
    dry_run: bool = False
    keep_going: Callable[[], bool] = lambda: True


def run_purge(layout: CacheLayout, round_: Round, *, now: float | None = None) -> PurgeReport:
    """One purge round: decide, remove under each model's lock with a re-check of live pods, collect leftovers.

    `live_pods` is asked once for the plan and again inside each removal, just before it commits.
    `keep_going` is asked before each removal: the agent stops a round when it loses its Lease.
    """
    moment = time.time() if now is None else now
    models = list_models(layout)
    free, _ = free_space(layout)
    pods = round_.live_pods()
    use = live_use(layout, pods)
    decisions = plan_purge(models, in_use=pods, now=moment, policy=round_.policy, free_bytes=free)
    report = PurgeReport([PurgeItem(d) for d in decisions], [], round_.dry_run, stopped=False)
    for item in report.items:
        if not item.decision.remove or round_.dry_run:
            continue
        if not round_.keep_going():
            report.stopped = True
            item.refused = "not removed: this purge round was stopped"
            continue
        _remove_decided(layout, item, round_, use)
    report.stopped = report.stopped or not round_.keep_going()
    if not report.stopped:
        plan = plan_collection(layout, use=use, ages=round_.ages, now=moment)
        if round_.dry_run:
            report.leftovers = plan
        else:
            done = collect(layout, plan, use=use, ages=round_.ages, now=moment, identity=round_.identity)
            report.leftovers, report.deferred = done.removed, done.deferred
    return report


def _remove_decided(layout: CacheLayout, item: PurgeItem, round_: Round, use: LiveUse) -> None:
    decision = item.decision

    def recheck() -> str | None:
        pods = pods_of(round_.live_pods(), decision.key)
        return f"a pod started using it meanwhile ({', '.join(pods)})" if pods else None

    idle_for = None if decision.cause is Cause.WATERMARK else round_.policy.unused_for
    try:
        removed = remove_model(
            layout,
            decision.key,
            reason=decision.reason,
            identity=round_.identity,
            use=use,
            check=RemovalCheck(idle_for=idle_for, recheck=recheck),
        )
    except RemovalRefusedError as err:
        item.refused, item.kept_at_removal = f"not removed: {err}", True
        log.info("kept %s: %s", decision.key, err, extra={"model_key": decision.key})
        return
    item.removed, item.freed_bytes, item.deferred = True, removed.freed, removed.deferred


def read_watermark(value: str, *, capacity: int) -> int:
    """A free-space watermark in bytes: a size (``50Gi``, ``200G``) or a share of the volume (``10%``).

    "" means none (0). ValueError names what was expected.
    """
    text = value.strip()
    if not text:
        return 0
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if not 0 <= share <= 100:
            raise ValueError("expected a share of the volume from 0% to 100%, or a size such as 50Gi")
        return int(capacity * share / 100)
    try:
        return size_bytes(text)
    except ValueError as err:
        raise ValueError(f"{err}, or a share of the volume such as 10%") from None
