"""Purging unused models: `plan_purge` decides (pure), `run_purge` carries a round out.

MLIS's semantics: a model goes when it has not been used for `purgeUnusedCacheEntrysAfter`. Done
safely: never while a live pod references it, never while its lock is held (a download or another
removal), and a capacity watermark may evict the least recently used unused models early. The
removal itself (modelcache.cache.removal) re-checks everything under the model's lock. `modelcache purge` and
the cache agent both run `run_purge`; neither this module nor anything it imports talks to a source.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from modelcache.cache.inventory import CacheEntry, free_space, list_models
from modelcache.cache.layout import CacheLayout
from modelcache.cache.owners import Identity
from modelcache.cache.removal import RemovalRefusedError, busy_repositories, collect_garbage, remove_model
from modelcache.contract.quantities import format_bytes, format_duration, size_bytes

log = logging.getLogger(__name__)
LivePods = Callable[[], Mapping[str, Sequence[str]]]  # model key -> live pods (namespace/name) using it


@dataclass(frozen=True, slots=True)
class PurgePolicy:
    unused_for: float  # seconds: MLIS's purgeUnusedCacheEntrysAfter
    min_free_bytes: int = 0  # capacity watermark: evict LRU unused models while free space is below this


@dataclass(frozen=True, slots=True)
class Decision:
    model: CacheEntry
    remove: bool
    reason: str

    @property
    def key(self) -> str:
        return self.model.key


def plan_purge(
    models: Sequence[CacheEntry],
    *,
    in_use: Mapping[str, Sequence[str]],
    now: float,
    policy: PurgePolicy,
    free_bytes: int,
) -> list[Decision]:
    """One decision per model, with its reason; `in_use` maps keys to the live pods that use them."""
    decisions: dict[str, Decision] = {}
    evictable: list[CacheEntry] = []  # unused, unlocked, but within the TTL
    for model in models:
        decision, could_evict = _decide(model, in_use.get(model.key, ()), now, policy)
        decisions[model.key] = decision
        if could_evict:
            evictable.append(model)
    freed = sum(d.model.size for d in decisions.values() if d.remove)
    if policy.min_free_bytes and free_bytes + freed < policy.min_free_bytes:
        for model in sorted(evictable, key=lambda m: (m.idle_since or 0.0, m.key)):
            if free_bytes + freed >= policy.min_free_bytes:
                break
            freed += model.size
            decisions[model.key] = Decision(
                model,
                True,
                f"free space {format_bytes(free_bytes)} is below the watermark {format_bytes(policy.min_free_bytes)}; "
                f"least recently used (idle {format_duration(now - (model.idle_since or now))})",
            )
    return [decisions[m.key] for m in models]


def _decide(model: CacheEntry, pods: Sequence[str], now: float, policy: PurgePolicy) -> tuple[Decision, bool]:
    if model.state == "downloading" or model.locked:
        holder = model.download.holder if model.download else "another process"
        return Decision(model, False, f"locked by {holder}: a download or removal is under way"), False
    if pods:
        shown = ", ".join(sorted(pods)[:3]) + (f" and {len(pods) - 3} more" if len(pods) > 3 else "")
        return Decision(model, False, f"in use by {len(pods)} live pod(s): {shown}"), False
    if model.state == "interrupted":
        return Decision(model, False, "not ready: its leftovers are cleaned once they are stale"), False
    idle_since = model.idle_since
    if idle_since is None:
        return Decision(model, False, "no record of use or publication"), False
    idle = now - idle_since
    ttl = format_duration(policy.unused_for)
    if idle >= policy.unused_for:
        what = "corrupt and unused" if model.state == "corrupt" else "unused"
        return Decision(model, True, f"{what} for {format_duration(idle)} (purge after {ttl})"), False
    return Decision(model, False, f"used {format_duration(idle)} ago (purge after {ttl})"), True


def run_purge(
    layout: CacheLayout,
    *,
    policy: PurgePolicy,
    staging_after: float,
    outcomes_after: float,
    dry_run: bool,
    live_pods: LivePods,
    identity: Identity,
    keep_going: Callable[[], bool] = lambda: True,
    now: float | None = None,
) -> dict[str, Any]:
    """One purge round: decide, remove under each model's lock with a re-check of live pods, clean leftovers.

    `live_pods` is asked once for the plan and again inside each removal, just before it commits.
    `keep_going` is asked before each removal: the agent stops a round when it loses its Lease.
    The report: per model the decision and its reason, the leftovers removed, the bytes freed, and
    whether the round was stopped before its end.
    """
    moment = time.time() if now is None else now
    models = list_models(layout)
    free, _ = free_space(layout)
    in_use = live_pods()
    decisions = plan_purge(models, in_use=in_use, now=moment, policy=policy, free_bytes=free)
    busy = busy_repositories(layout, in_use)
    report: list[dict[str, Any]] = []
    freed = 0
    stopped = False
    for decision in decisions:
        item: dict[str, Any] = {"key": decision.key, "source": decision.model.source, "remove": decision.remove}
        item["reason"] = decision.reason
        if decision.remove and not dry_run:
            stopped = stopped or not keep_going()
            if stopped:
                item.update(remove=False, refused="; not removed: this purge round was stopped")
            else:
                freed += _remove_decided(layout, decision, item, live_pods, identity, policy, busy)
        elif decision.remove:
            freed += decision.model.size
        report.append(item)
    leftovers = []
    stopped = stopped or not keep_going()
    if not stopped:
        leftovers = collect_garbage(
            layout,
            identity=identity,
            staging_after=staging_after,
            outcomes_after=outcomes_after,
            in_use=set(in_use),
            dry_run=dry_run,
        )
    freed += sum(item.bytes for item in leftovers)
    return {
        "models": report,
        "leftovers": [asdict(item) for item in leftovers],
        "freed_bytes": freed,
        "dry_run": dry_run,
        "stopped": stopped,
    }


def _remove_decided(
    layout: CacheLayout,
    decision: Decision,
    item: dict[str, Any],
    live_pods: LivePods,
    identity: Identity,
    policy: PurgePolicy,
    busy: set[str],
) -> int:
    def recheck() -> str | None:
        pods = live_pods().get(decision.key)
        return f"a pod started using it meanwhile ({', '.join(pods)})" if pods else None

    watermark = decision.reason.startswith("free space")
    try:
        removed = remove_model(
            layout,
            decision.key,
            reason=decision.reason,
            identity=identity,
            idle_for=None if watermark else policy.unused_for,
            recheck=recheck,
            busy_repos=busy,
        )
    except RemovalRefusedError as err:
        item.update(remove=False, refused=f"; not removed: {err}", kept_at_removal=True)
        log.info("kept %s: %s", decision.key, err, extra={"model_key": decision.key})
        return 0
    item["freed_bytes"] = removed.freed
    item["deferred"] = removed.deferred
    return removed.freed


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
