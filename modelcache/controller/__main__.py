"""Entry point of the modelcache controller: cache volumes per namespace and the webhook's certificates.

Every replica watches; only the holder of the Lease acts. The loop wakes when a modelcache pod is
created (so a pod waiting for its namespace's PVC is served within a second or two) or a cache PVC
changes (an operator's new PVC is admitted at once), and otherwise every
``resync_every``, which is also the heartbeat of the status document the webhook reads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from types import FrameType

from certs.cluster import reconcile_certificates
from modelcache.contract.volumes import NamespaceVolume, VolumeStatus
from modelcache.controller import kube
from modelcache.controller.config import ControllerSettings, help_text
from modelcache.controller.volumes import plan_volumes
from modelcache.controller.waiting import Waiting
from modelcache.runtime import httpd
from modelcache.runtime.kube import API_ERRORS, ApiError, Kube, connect
from modelcache.runtime.leader import LeaderElector, LeaderLoop
from modelcache.runtime.logs import configure_logging
from modelcache.runtime.settings import SettingsError, answer_help

log = logging.getLogger("controller")
RETRY_AFTER_ERROR = 5.0  # seconds before a failed pass is tried again
PASS_EVERY = 5.0  # seconds between passes when nothing wakes the loop
HEALTH_PORT = 8081


class Controller:
    """The reconcile loop; `step` is one pass (when leading), `run` repeats it until told to stop.

    The Lease is renewed on a thread of its own (LeaderLoop); a pass acts only while the elector says
    we lead, and stops between two actions when that changes.
    """

    def __init__(self, api: Kube, settings: ControllerSettings) -> None:
        self.api, self.settings = api, settings
        self.elector = LeaderElector(
            api,
            namespace=settings.namespace,
            name=settings.lease_name,
            identity=settings.identity,
            timings=settings.lease_timings,
        )
        self.volumes: VolumeStatus | None = None  # the last status written
        self.waiting = Waiting(api, settings, node_local=self._node_local)
        self.wake = threading.Event()
        self.alive_at = time.monotonic()
        self._next_volumes = self._next_certificates = datetime.min.replace(tzinfo=UTC)

    def run(self, stop: threading.Event) -> None:
        lease = LeaderLoop(self.elector, on_change=lambda _: self.wake.set()).start()
        for watcher in kube.watch_changes(self.api, self.settings, timeout_seconds=300):
            threading.Thread(target=self._wake_on, args=(watcher, stop), name=watcher.__name__, daemon=True).start()
        while not stop.is_set():
            self.step(datetime.now(UTC))
            self.wake.wait(timeout=PASS_EVERY)
        lease.stop()

    def step(self, now: datetime) -> None:
        self.alive_at = time.monotonic()
        if not self.elector.is_leader:
            return
        if self.settings.manage_certificates and now >= self._next_certificates:
            self._next_certificates = now + self.settings.certificate_check_every
            try:
                reconcile_certificates(
                    self.api,
                    namespace=self.settings.namespace,
                    service=self.settings.service_name,
                    tls_secret=self.settings.tls_secret,
                    ca_secret=self.settings.ca_secret,
                    webhook_configuration=self.settings.webhook_configuration,
                    now=now,
                )
            except (*API_ERRORS, LookupError) as err:
                log.error("certificates: %s; retrying in a minute", err)
                self._next_certificates = now + timedelta(minutes=1)
        if self.wake.is_set() or now >= self._next_volumes:
            self.wake.clear()
            self._next_volumes = now + self.settings.resync_every
            try:
                self.reconcile_volumes(now)
            except API_ERRORS as err:
                log.error("volumes: %s; retrying in %d s", err, RETRY_AFTER_ERROR)
                self._next_volumes = now + timedelta(seconds=RETRY_AFTER_ERROR)
        if self.settings.model_waits and self.elector.is_leader:
            try:
                self.waiting.reconcile()
            except API_ERRORS as err:
                log.error("pods that wait for their model: %s; trying again at the next pass", err)

    def reconcile_volumes(self, now: datetime) -> None:
        plan = plan_volumes(kube.observe_volumes(self.api, self.settings), self.settings, now=now)
        failed: dict[str, NamespaceVolume] = {}
        for action in plan.actions:
            if not self.elector.is_leader:
                log.warning("volumes: the lease was lost; the rest of this pass is left to the next leader")
                return
            try:
                kube.apply_action(self.api, action)
            except ApiError as err:  # e.g. a ResourceQuota in that namespace: report it there, go on
                what = f"{action.verb} {action.kind} {action.name}"
                message = f"could not {what}: {err.status} {err.message}"
                log.error("volumes: %s", message, extra={"namespace": action.serves or "-"})
                if action.serves:
                    failed[action.serves] = NamespaceVolume("error", message)
        status = dataclasses.replace(plan.status, namespaces={**plan.status.namespaces, **failed})
        kube.write_status(self.api, self.settings, status)
        self.volumes = status
        if status.problem:
            log.error("volumes: %s", status.problem)
        for namespace, entry in status.namespaces.items():
            if entry.state == "error" and namespace not in failed:
                log.error("volumes: namespace %s: %s", namespace, entry.message, extra={"namespace": namespace})

    def _node_local(self, namespace: str) -> bool:
        return self.volumes is not None and self.volumes.is_node_local(namespace)

    def _wake_on(self, watcher: kube.Watcher, stop: threading.Event) -> None:
        """Wake the loop on each event of `watcher`; the watch restarts every few minutes."""
        while not stop.is_set():
            try:
                for _ in watcher():
                    self.wake.set()
            except API_ERRORS as err:
                log.warning("watch %s: %s; restarting it", watcher.__name__, err)
                stop.wait(timeout=RETRY_AFTER_ERROR)


def _health(controller: Controller) -> httpd.Route:
    """GET /healthz: 200 while the loop has turned in the last minute."""

    def check() -> tuple[int, str, bytes]:
        healthy = time.monotonic() - controller.alive_at < 60
        return (200, httpd.TEXT, b"ok\n") if healthy else (503, httpd.TEXT, b"stuck\n")

    return check


def main(argv: list[str] | None = None) -> int:
    answered = answer_help(sys.argv[1:] if argv is None else argv, help_text, program="modelcache-controller")
    if answered is not None:
        return answered
    try:
        settings = ControllerSettings.from_env(os.environ)
    except SettingsError as err:
        print(err, file=sys.stderr)  # noqa: T201 (logging is not configured yet)
        return 2
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    controller = Controller(connect(), settings)
    stop = threading.Event()

    def on_term(signum: int, _: FrameType | None) -> None:
        log.info("signal %d: releasing the lease and stopping", signum)
        stop.set()
        controller.wake.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    httpd.serve(HEALTH_PORT, {"/healthz": _health(controller)})
    log.info(
        "modelcache controller %s: volumes %s (claim %s), certificates %s",
        settings.identity,
        settings.volume_mode,
        settings.claim_name,
        "managed" if settings.manage_certificates else "external",
    )
    controller.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
