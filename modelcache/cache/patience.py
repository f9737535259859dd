"""How patient a fetcher is with another pod's lock: how long it waits, how often it looks, when it takes
over. Its own light module: the cache-hit path reads these settings but never takes a lock."""

from __future__ import annotations

from dataclasses import dataclass

from modelcache.contract.wire import DEFAULT_LOCK_TIMEOUT, DEFAULT_TAKEOVER_AFTER


@dataclass(frozen=True, slots=True)
class LockSettings:
    """How patient a fetcher is with another pod's lock (MODELCACHE_LOCK_*, set by the webhook)."""

    timeout: float = DEFAULT_LOCK_TIMEOUT  # give up waiting (the pod's init container then restarts)
    poll: float = 1.0  # seconds between attempts, with +-50 % jitter
    log_every: float = 10.0
    heartbeat_every: float = 5.0
    stale_after: float = 60.0  # report the holder as stale when its record has not changed for this long
    takeover_after: float = DEFAULT_TAKEOVER_AFTER  # then take over after this long (0: never)
    enabled: bool = True
