"""What the injected fetcher costs a pod at scheduling time.

A pod reserves the larger of its biggest init container's requests and the sum of its app containers'
requests, per resource. The fetcher's requests must stay below what a small app asks for, so that
injecting it does not make a pod need more of a node than its own containers do.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import jsonpatch
import pytest

from devtools.admission import admission_review
from modelcache.contract.quantities import quantity
from webhook.config import Settings
from webhook.handlers import review_admission
from webhook.review import decode_patch

SMALL_APP = {"cpu": "100m", "memory": "128Mi"}  # a sidecar-sized server, or a small CPU model


def effective_requests(pod: dict[str, Any]) -> dict[str, Decimal]:
    """The scheduler's rule (no pod overhead, no sidecar init containers)."""
    spec = pod["spec"]
    out = {}
    for resource in ("cpu", "memory"):
        apps = sum(
            (quantity(c.get("resources", {}).get("requests", {}).get(resource, "0")) for c in spec["containers"]),
            Decimal(0),
        )
        inits = [
            quantity(c.get("resources", {}).get("requests", {}).get(resource, "0")) for c in spec["initContainers"]
        ]
        out[resource] = max([apps, *inits])
    return out


def injected(requests: dict[str, str], settings: Settings) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "small", "annotations": {"modelcache.io/model": "hf://org/model"}},
        "spec": {"containers": [{"name": "app", "image": "app:1", "resources": {"requests": requests}}]},
    }
    result = review_admission(json.dumps(admission_review(pod, "serving")).encode(), settings=settings)
    mutated: dict[str, Any] = jsonpatch.apply_patch(pod, decode_patch(result.body))
    return mutated


def test_the_default_fetcher_does_not_raise_what_a_small_app_reserves() -> None:
    pod = injected(SMALL_APP, Settings())
    assert effective_requests(pod) == {name: quantity(value) for name, value in SMALL_APP.items()}


def test_the_default_fetcher_requests_cover_its_measured_peak_memory() -> None:
    """docs/benchmarks.md: a cold one-stream copy peaks at 77 MB RSS; the request must not be below it
    (ranged downloads of large files peak higher, within the limit: docs/configuration.md)."""
    (fetcher,) = injected(SMALL_APP, Settings())["spec"]["initContainers"]
    assert quantity(fetcher["resources"]["requests"]["memory"]) >= 77 * 10**6
    assert fetcher["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}  # the limits stay


@pytest.mark.parametrize(
    ("annotation", "value"),
    [("modelcache.io/fetcher-cpu-request", "1"), ("modelcache.io/fetcher-memory-request", "1Gi")],
)
def test_a_workload_can_still_raise_its_fetchers_request(annotation: str, value: str) -> None:
    settings = Settings()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "big", "annotations": {"modelcache.io/model": "hf://org/model", annotation: value}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    result = review_admission(json.dumps(admission_review(pod, "serving")).encode(), settings=settings)
    (fetcher,) = jsonpatch.apply_patch(pod, decode_patch(result.body))["spec"]["initContainers"]
    resource = "cpu" if "cpu" in annotation else "memory"
    assert fetcher["resources"]["requests"][resource] == value
