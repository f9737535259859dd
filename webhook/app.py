"""The aiohttp application: routes, error middleware, state and the certificate reload task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from webhook import handlers
from webhook.config import Settings
from webhook.keys import METRICS, SETTINGS, TLS
from webhook.metrics import WebhookMetrics
from webhook.review import MAX_BODY_BYTES
from webhook.tls import TlsReloader

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A bug becomes HTTP 500 (the cluster's failurePolicy decides), never a denial or a stack trace."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("internal error handling %s %s", request.method, request.path)
        if request.path == "/mutate":
            request.app[METRICS].reviews.labels("error").inc()
        return web.json_response({"error": "internal error; see the webhook's log"}, status=500)


def create_app(settings: Settings, *, tls: TlsReloader | None = None) -> web.Application:
    """Build the application; `tls` is None when TLS is terminated elsewhere (never in production)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[METRICS] = WebhookMetrics.create()
    app[TLS] = tls
    app.router.add_post("/mutate", handlers.mutate)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics_endpoint)
    if tls is not None:
        app.cleanup_ctx.append(_reload_certificates)
    return app


async def _reload_certificates(app: web.Application) -> AsyncIterator[None]:
    """Poll the certificate files; Secret volumes change by symlink swaps that send no usable events."""
    tls = app[TLS]
    interval = app[SETTINGS].tls_reload_seconds

    async def poll() -> None:
        while True:
            await asyncio.sleep(interval)
            if tls is not None:
                tls.reload()

    task = asyncio.create_task(poll())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
