"""Typed application state keys."""

from __future__ import annotations

from aiohttp import web

from webhook.config import Settings
from webhook.metrics import WebhookMetrics
from webhook.tls import TlsReloader

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", WebhookMetrics)
TLS: web.AppKey[TlsReloader | None] = web.AppKey("tls")
