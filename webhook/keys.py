"""Typed application state keys."""

from __future__ import annotations

from aiohttp import web

from webhook.config import Settings
from webhook.metrics import WebhookMetrics
from webhook.tls import TlsReloader
from webhook.volume_status import VolumeStatusWatcher

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", WebhookMetrics)
TLS: web.AppKey[TlsReloader | None] = web.AppKey("tls")
VOLUMES: web.AppKey[VolumeStatusWatcher | None] = web.AppKey("volumes")
