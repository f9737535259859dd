"""Prometheus metrics of the webhook, in a registry per app (so tests and benchmarks stay isolated)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = ("skipped", "already_injected", "injected", "opted_out", "denied", "malformed", "error")
# Sub-millisecond resolution: a review costs ~0.1 ms of CPU and the apiserver's budget is 3 s.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class WebhookMetrics:
    registry: CollectorRegistry
    reviews: Counter
    latency: Histogram
    tls_not_after: Gauge
    by_outcome: dict[str, Any]

    def count(self, outcome: str) -> None:
        """Count one review; the label children are resolved once, off the hot path."""
        self.by_outcome[outcome].inc()

    @classmethod
    def create(cls) -> WebhookMetrics:
        registry = CollectorRegistry()
        reviews = Counter(
            "modelcache_webhook_reviews",
            "Admission reviews handled, by outcome.",
            ["outcome"],
            registry=registry,
        )
        # Every series exists from the start, so rates work from zero.
        by_outcome = {outcome: reviews.labels(outcome) for outcome in OUTCOMES}
        latency = Histogram(
            "modelcache_webhook_review_duration_seconds",
            "Time from request received to response ready, in seconds.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        tls_not_after = Gauge(
            "modelcache_webhook_tls_not_after_timestamp_seconds",
            "Expiry of the served TLS certificate (Unix time); 0 before one is loaded.",
            registry=registry,
        )
        return cls(
            registry=registry, reviews=reviews, latency=latency, tls_not_after=tls_not_after, by_outcome=by_outcome
        )
