"""One active controller at a time: a coordination.k8s.io Lease, renewed well before it expires.

Updates carry the resourceVersion read just before, so two replicas that race for an expired Lease
cannot both win: the apiserver refuses the second write with 409 Conflict.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelcache.contract import JsonObject
from modelcache.runtime.kube import read_object, utc_timestamp

log = logging.getLogger(__name__)


class LeaderElector:
    """Acquire or renew the Lease named `name`; `is_leader` says whether we held it at the last try."""

    def __init__(self, api: client.ApiClient, *, namespace: str, name: str, identity: str, duration: timedelta) -> None:
        self._leases = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity, self.duration = namespace, name, identity, duration
        self.is_leader = False

    def try_lead(self, now: datetime) -> bool:
        """One attempt; True while we hold the Lease. API errors count as not leading."""
        try:
            leading = self._attempt(now)
        except ApiException as err:
            if err.status != 409:
                log.warning("lease %s/%s: %s %s", self.namespace, self.name, err.status, err.reason)
            leading = False
        if leading != self.is_leader:
            log.info(
                "%s the lease %s/%s as %s", "acquired" if leading else "lost", self.namespace, self.name, self.identity
            )
        self.is_leader = leading
        return leading

    def release(self) -> None:
        """Give the Lease up at shutdown, so another replica takes over at once instead of after expiry."""
        if not self.is_leader:
            return
        try:
            lease = self._get()
            if lease is not None and lease["spec"].get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                self._leases.replace_namespaced_lease(self.name, self.namespace, lease, _preload_content=False)
        except ApiException as err:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, err.reason)
        self.is_leader = False

    def _attempt(self, now: datetime) -> bool:
        lease = self._get()
        stamp = utc_timestamp(now)
        seconds = int(self.duration.total_seconds())
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": seconds,
                    "acquireTime": stamp,
                    "renewTime": stamp,
                    "leaseTransitions": 0,
                },
            }
            self._leases.create_namespaced_lease(self.namespace, body, _preload_content=False)
            return True
        spec = lease["spec"]
        holder = spec.get("holderIdentity")
        if holder and holder != self.identity and not _expired(spec, now):
            return False
        if holder != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=seconds, renewTime=stamp)
        self._leases.replace_namespaced_lease(self.name, self.namespace, lease, _preload_content=False)
        return True

    def _get(self) -> JsonObject | None:
        return read_object(self._leases.read_namespaced_lease, self.name, self.namespace)


def _expired(spec: JsonObject, now: datetime) -> bool:
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not renewed:
        return True
    moment = datetime.fromisoformat(str(renewed).replace("Z", "+00:00")).astimezone(UTC)
    return now > moment + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 15))
