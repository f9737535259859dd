"""Which models to purge: a pure decision over the cache inventory, live pods, the clock and free space.

MLIS's semantics: a model goes when it has not been used for `purgeUnusedCachedModelsAfter`. Done
safely: never while a live pod references it, never while its lock is held (a download or another
removal), and a capacity watermark may evict the least recently used unused models early. The
removal itself (fetcher.removal) re-checks everything under the model's lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fetcher.inventory import CachedModel
from fetcher.layout import format_bytes


@dataclass(frozen=True, slots=True)
class PurgePolicy:
    unused_for: float  # seconds: MLIS's purgeUnusedCachedModelsAfter
    min_free_bytes: int = 0  # capacity watermark: evict LRU unused models while free space is below this


@dataclass(frozen=True, slots=True)
class Decision:
    model: CachedModel
    remove: bool
    reason: str

    @property
    def key(self) -> str:
        return self.model.key


def plan_purge(
    models: Sequence[CachedModel],
    *,
    in_use: Mapping[str, Sequence[str]],
    now: float,
    policy: PurgePolicy,
    free_bytes: int,
) -> list[Decision]:
    """One decision per model, with its reason; `in_use` maps keys to the live pods that use them."""
    decisions: dict[str, Decision] = {}
    evictable: list[CachedModel] = []  # unused, unlocked, but within the TTL
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


def _decide(model: CachedModel, pods: Sequence[str], now: float, policy: PurgePolicy) -> tuple[Decision, bool]:
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


def format_duration(seconds: float) -> str:
    """'3d 4h', '12m', '40s': the two largest units."""
    seconds = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)
