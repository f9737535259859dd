"""On a real cluster: no admission fails while the webhook's certificates are deleted and made again.

A stream of annotated pod creates (server-side dry runs: admitted through the webhook, never stored) runs
through each event and for long enough afterwards for the kubelet to deliver the new Secret to every
webhook pod (it takes 13 to 50 s, and up to a couple of minutes). Not one may fail.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cryptography import x509

from certs.rotation import signed_by
from tests.e2e.conftest import CLUSTER, SYSTEM, eventually, kubectl, kubectl_json
from tests.e2e.workloads import pod

AFTER_THE_EVENT = 150.0  # seconds of creates once the new Secret exists: the kubelet's delivery, with margin


@contextmanager
def stream_of_creates(namespace: str) -> Iterator[Callable[[], tuple[int, list[str]]]]:
    """Annotated creates, one after another, until the block ends; yields (count, failures) so far."""
    stop, failures, count = threading.Event(), [], [0]

    def run() -> None:
        while not stop.is_set():
            name = f"stream-{uuid.uuid4().hex[:8]}"
            body = json.dumps(pod(name, namespace, {"modelcache.io/model": CLUSTER.model}))
            result = kubectl("create", "--dry-run=server", "-f", "-", stdin=body, check=False)
            count[0] += 1
            if result.returncode != 0:
                failures.append(result.stderr.strip()[-300:])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield lambda: (count[0], list(failures))
    finally:
        stop.set()
        thread.join(60)


def stored(secret: str, key: str) -> x509.Certificate | None:
    found = kubectl("-n", SYSTEM, "get", "secret", secret, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    return x509.load_pem_x509_certificate(base64.b64decode(json.loads(found.stdout)["data"][key]))


def serving_certificate() -> x509.Certificate | None:
    return stored("modelcache-webhook-tls", "tls.crt")


def ca_certificate() -> x509.Certificate | None:
    return stored("modelcache-ca", "ca.crt")


@contextmanager
def deleted_under_load(namespace: str, secret: str) -> Iterator[Callable[[], tuple[int, list[str]]]]:
    """The Secret deleted while creates stream, and the controller told to reconcile at once."""
    with stream_of_creates(namespace) as progress:
        time.sleep(5)
        kubectl("-n", SYSTEM, "delete", "secret", secret)
        kubectl("-n", SYSTEM, "rollout", "restart", "deploy/modelcache-controller")  # it checks at start
        yield progress


def test_deleting_the_serving_secret_fails_no_admission(namespace: str) -> None:
    before = serving_certificate()
    assert before is not None
    with deleted_under_load(namespace, "modelcache-webhook-tls") as progress:
        eventually("a new serving certificate", lambda: (c := serving_certificate()) is not None and c != before)
        time.sleep(AFTER_THE_EVENT)
        count, failures = progress()
    assert count > 20
    assert failures == [], f"{len(failures)} of {count} creates failed: {failures[:3]}"


def test_deleting_the_ca_secret_fails_no_admission_through_the_whole_rotation(namespace: str) -> None:
    old_ca = ca_certificate()
    assert old_ca is not None
    with deleted_under_load(namespace, "modelcache-ca") as progress:
        new_ca = eventually("a new CA", lambda: (c := ca_certificate()) is not None and c != old_ca and c)
        # The serving certificate moves to the new CA at a check at least 5 minutes later.
        eventually(
            "a serving certificate from the new CA",
            lambda: (c := serving_certificate()) is not None and signed_by(c, new_ca),
            seconds=900,
            every=10,
        )
        time.sleep(AFTER_THE_EVENT)
        count, failures = progress()
    assert failures == [], f"{len(failures)} of {count} creates failed: {failures[:3]}"
    bundle = kubectl_json("get", "mutatingwebhookconfiguration", "modelcache-webhook")["webhooks"][0]
    published = x509.load_pem_x509_certificates(base64.b64decode(bundle["clientConfig"]["caBundle"]))
    assert new_ca in published
