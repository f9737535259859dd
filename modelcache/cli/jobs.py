"""Creating a prefetch Job (the Job itself: modelcache.contract.prefetch)."""

from __future__ import annotations

from typing import Any

from modelcache.contract import JsonObject


def create_job(api: Any, job: JsonObject) -> str:
    """Create the Job; an existing one of the same name is reported, not replaced."""
    from modelcache.runtime.kube import ApiError, path

    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    try:
        api.create(path("batch/v1", "jobs", namespace=namespace), job)
    except ApiError as err:
        if err.status == 409:
            return (
                f"job {namespace}/{name} exists already: `kubectl -n {namespace} logs job/{name} -c modelcache-fetch`"
            )
        raise
    return f"job {namespace}/{name} created: `kubectl -n {namespace} logs -f job/{name} -c modelcache-fetch`"
