"""One active replica at a time: a coordination.k8s.io Lease, by client-go's rules.

- **Never trust another node's clock.** The holder's ``renewTime`` is written for people; a candidate
  remembers the record it last saw and *when it saw it change*, on its own monotonic clock. The Lease
  is free when the holder leaves it, or when the record has not changed for ``leaseDurationSeconds`` of
  the candidate's own time, however fast or slow the holder's clock runs.
- **Renew on a thread of its own, with a deadline.** :class:`LeaderLoop` tries every ``retry_period``;
  :attr:`LeaderElector.is_leader` is true only while the last successful renewal is younger than
  ``renew_deadline`` (shorter than the lease), so work that checks it stops before another replica may
  take over, even when the renewing thread is stuck in a request.
- **An identity per process**, ``<pod>_<uuid>``: a restarted pod with the same name is another candidate.
- Updates carry the resourceVersion read just before, so two candidates that race for a free Lease
  cannot both win: the apiserver refuses the second write with 409 Conflict.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from modelcache.contract import JsonObject
from modelcache.runtime.kube import API_ERRORS, ApiError, Kube, path, utc_timestamp
from modelcache.runtime.timings import LeaseTimings

log = logging.getLogger(__name__)


class LeaderElector:
    """Acquire or renew the Lease `name` as `<identity>_<uuid>`; `is_leader` says whether we may act now."""

    def __init__(
        self,
        api: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings = LeaseTimings(),  # noqa: B008 (frozen)
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.namespace, self.name, self.timings = namespace, name, timings
        self.identity = f"{identity}_{uuid.uuid4().hex[:12]}"
        self._clock = clock
        self._lock = threading.Lock()
        self._observed: str | None = None  # the record we saw last, as JSON
        self._observed_at = 0.0  # when it last changed, on our clock
        self._observed_duration = timings.duration
        self._renewed_at: float | None = None  # when our last acquire or renew succeeded, on our clock
        self.holder = ""  # the holder we saw last, for logs and metrics

    @property
    def is_leader(self) -> bool:
        """True while our last successful renewal is younger than the renew deadline."""
        with self._lock:
            renewed = self._renewed_at
        return renewed is not None and self._clock() - renewed < self.timings.renew_deadline

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease now. API errors count as a failed attempt."""
        started = self._clock()
        try:
            held = self._attempt(started)
        except API_ERRORS as err:
            if not (isinstance(err, ApiError) and err.status == 409):
                log.warning("lease %s/%s: %s", self.namespace, self.name, _describe(err))
            held = False
        if held:
            with self._lock:
                self._renewed_at = started  # the attempt's start: a slow request never extends our term
        return held

    def release(self) -> None:
        """Give the Lease up at shutdown, so another replica takes over at once instead of after expiry."""
        if not self.is_leader:
            return
        with self._lock:
            self._renewed_at = None
        try:
            lease = self._get()
            if lease is not None and lease["spec"].get("holderIdentity") == self.identity:
                now = utc_timestamp(datetime.now(UTC))
                lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1, acquireTime=now, renewTime=now)
                self._api.replace(self._path(), lease, timeout=self._timeout())
                log.info("released the lease %s/%s", self.namespace, self.name)
        except API_ERRORS as err:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, _describe(err))

    def _attempt(self, now: float) -> bool:
        lease = self._get()
        if lease is None:
            collection = path("coordination.k8s.io/v1", "leases", namespace=self.namespace)
            self._api.create(collection, self._new_lease(), timeout=self._timeout())
            return True
        spec = lease.setdefault("spec", {})
        self._observe(spec, now)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity and self._observed_at + self._observed_duration > now:
            return False  # held, and its record changed less than a lease ago on our clock
        stamp = utc_timestamp(datetime.now(UTC))
        if holder != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=int(self.timings.duration), renewTime=stamp)
        self._api.replace(self._path(), lease, timeout=self._timeout())
        return True

    def _observe(self, spec: JsonObject, now: float) -> None:
        raw = json.dumps(spec, sort_keys=True)
        if raw != self._observed:
            self._observed, self._observed_at = raw, now
            self._observed_duration = float(spec.get("leaseDurationSeconds") or self.timings.duration)
            self.holder = str(spec.get("holderIdentity") or "")

    def _new_lease(self) -> JsonObject:
        stamp = utc_timestamp(datetime.now(UTC))
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.timings.duration),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }

    def _get(self) -> JsonObject | None:
        return self._api.read(self._path(), timeout=self._timeout())

    def _path(self) -> str:
        return path("coordination.k8s.io/v1", "leases", self.name, namespace=self.namespace)

    def _timeout(self) -> float:
        """Every call ends within the renew deadline (connect, read), so a hung API cannot hold us."""
        return max(1.0, self.timings.renew_deadline / 2)


class LeaderLoop:
    """Keeps trying (a candidate) or renewing (the leader) every retry period, on a daemon thread."""

    def __init__(self, elector: LeaderElector, *, on_change: Callable[[bool], None] | None = None) -> None:
        self.elector = elector
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{elector.name}", daemon=True)
        self._leading = False

    def start(self) -> LeaderLoop:
        self._thread.start()
        return self

    def stop(self, *, release: bool = True) -> None:
        """Stop renewing; give the Lease up (the caller has stopped acting: check is_leader first)."""
        self._stop.set()
        self._thread.join(timeout=self.elector.timings.renew_deadline + 5)
        if release:
            self.elector.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.elector.try_acquire_or_renew()
            self._report(self.elector.is_leader)
            self._stop.wait(self.elector.timings.retry_period)

    def _report(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        elector = self.elector
        if leading:
            log.info("acquired the lease %s/%s as %s", elector.namespace, elector.name, elector.identity)
        else:
            log.warning("lost the lease %s/%s: stopping work", elector.namespace, elector.name)
        if self.on_change is not None:
            self.on_change(leading)


def _describe(err: Exception) -> str:
    if isinstance(err, ApiError):
        return f"{err.status} {err.reason}"
    return f"{type(err).__name__}: {err}"
