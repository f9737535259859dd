"""The durations of leader election, as settings read them (no Kubernetes client here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    """client-go's three durations (seconds): its defaults are 15, 10 and 2."""

    duration: float = 15.0  # how long a candidate waits, on its own clock, for a record that does not change
    renew_deadline: float = 10.0  # how long the leader keeps acting without a successful renewal
    retry_period: float = 2.0  # how often candidates try and the leader renews

    @classmethod
    def of(cls, duration: timedelta, renew_deadline: timedelta, retry_period: timedelta) -> LeaseTimings:
        """From the MODELCACHE_LEASE_* settings."""
        return cls(duration.total_seconds(), renew_deadline.total_seconds(), retry_period.total_seconds())

    def problems(self, prefix: str = "MODELCACHE_LEASE") -> list[str]:
        if 0 < self.retry_period < self.renew_deadline < self.duration:
            return []
        return [
            f"{prefix}_RETRY_PERIOD ({self.retry_period:g}s) < {prefix}_RENEW_DEADLINE ({self.renew_deadline:g}s) < "
            f"{prefix}_DURATION ({self.duration:g}s) must hold: a leader must give up before another may take over"
        ]
