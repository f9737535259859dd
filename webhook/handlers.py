"""HTTP handlers: transport checks, then parse -> decide -> respond. No pod logic lives here."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelcache.contract import JsonObject
from webhook.config import Settings
from webhook.errors import DenialError, ReviewError
from webhook.injection import decide
from webhook.keys import METRICS, SETTINGS, TLS, VOLUMES
from webhook.review import AdmissionRequest, allowed, denied, parse_review, patched
from webhook.volume_status import VolumeStatusWatcher

log = logging.getLogger(__name__)
_INTERNAL_ERROR = b'{"error":"internal error; see the webhook log"}'


@dataclass(frozen=True, slots=True)
class ReviewResult:
    """The answer to one POST /mutate: HTTP status, body, and what to log and count."""

    status: int
    body: JsonObject
    outcome: str
    request: AdmissionRequest | None = None
    key: str | None = None
    detail: str = ""


def review_admission(body: bytes, *, settings: Settings, volumes: VolumeStatusWatcher | None = None) -> ReviewResult:
    """The whole admission decision for one request body (no I/O: `volumes` is read from memory)."""
    try:
        request = parse_review(body)
    except ReviewError as err:
        return ReviewResult(err.status, {"error": str(err)}, "malformed", detail=str(err))
    if not request.is_pod_create or request.object is None:
        return ReviewResult(200, allowed(request.uid), "skipped", request)
    try:
        claim_for = None if volumes is None else functools.partial(volumes.claim_for, request.namespace)
        ready = None if volumes is None else functools.partial(volumes.model_ready, request.namespace)
        decision = decide(request.object, settings=settings, claim_for=claim_for, model_ready=ready)
    except DenialError as err:
        return ReviewResult(200, denied(request.uid, str(err), code=err.code), "denied", request, detail=str(err))
    except ReviewError as err:
        return ReviewResult(err.status, {"error": str(err)}, "malformed", request, detail=str(err))
    audit = {"model-key": decision.key} if decision.key else None
    response = patched(request.uid, list(decision.patch), warnings=decision.warnings, audit=audit)
    return ReviewResult(200, response, decision.outcome, request, key=decision.key)


async def mutate(request: web.Request) -> web.Response:
    """POST /mutate: an AdmissionReview v1 in, an AdmissionReview v1 out."""
    started = time.perf_counter()
    metrics = request.app[METRICS]
    if request.content_type != "application/json":
        metrics.count("malformed")
        return web.json_response(
            {"error": f"content type {request.content_type!r}, expected application/json"}, status=415
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        metrics.count("malformed")
        raise
    try:
        result = review_admission(body, settings=request.app[SETTINGS], volumes=request.app[VOLUMES])
    except Exception:  # a bug: HTTP 500 so the failurePolicy decides; never a denial, never a traceback
        log.exception("internal error reviewing a pod")
        metrics.count("error")
        return web.Response(body=_INTERNAL_ERROR, status=500, content_type="application/json")
    metrics.count(result.outcome)
    metrics.latency.observe(time.perf_counter() - started)
    if log.isEnabledFor(logging.INFO):
        _log_review(result, time.perf_counter() - started)
    return web.Response(body=orjson.dumps(result.body), status=result.status, content_type="application/json")


def _log_review(result: ReviewResult, seconds: float) -> None:
    review = result.request
    pod = "-"
    if review is not None and review.object is not None:
        metadata = review.object.get("metadata")
        if isinstance(metadata, dict):
            pod = str(metadata.get("name") or metadata.get("generateName", "") + "*")
    fields = {
        "uid": review.uid if review else "-",
        "namespace": review.namespace if review else "-",
        "pod": pod,
        "outcome": result.outcome,
        "model_key": result.key or "-",
        "dry_run": review.dry_run if review else False,
        "ms": round(seconds * 1000, 3),
    }
    level = logging.WARNING if result.outcome in ("malformed", "denied") else logging.INFO
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    log.log(level, "review %s%s", text, f" detail={result.detail}" if result.detail else "", extra=fields)


async def healthz(_: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Readiness: only once TLS serves a valid, unexpired certificate and the volume status is synced."""
    tls = request.app[TLS]
    if tls is None or not tls.ready:
        return web.Response(status=503, text="no valid TLS certificate loaded yet\n")
    volumes = request.app[VOLUMES]
    if volumes is not None and not volumes.synced:
        return web.Response(status=503, text="the cache volume status has not been read from the API yet\n")
    return web.Response(text="ok\n")


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    tls = request.app[TLS]
    if tls is not None and tls.current is not None:
        metrics.tls_not_after.set(tls.current.not_after.timestamp())
    response = web.Response(body=generate_latest(metrics.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
