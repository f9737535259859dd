"""Entry point of the webhook image: read settings, set up logging and TLS, serve."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from modelcache.runtime.logs import configure_logging
from modelcache.runtime.settings import SettingsError, answer_help
from webhook.app import create_app, health_site
from webhook.config import Settings, help_text
from webhook.tls import TlsReloader

log = logging.getLogger("webhook")


def main(argv: list[str] | None = None) -> int:
    answered = answer_help(sys.argv[1:] if argv is None else argv, help_text, program="modelcache-webhook")
    if answered is not None:
        return answered
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as err:
        print(err, file=sys.stderr)  # noqa: T201 (logging is not configured yet)
        return 2
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    tls = TlsReloader(Path(settings.tls_dir), min_version=settings.tls_min_version)
    if not tls.reload():
        log.warning("no usable certificate in %s yet; not ready until one appears", settings.tls_dir)
    app = create_app(settings, tls=tls)
    app.cleanup_ctx.append(health_site(settings.host, settings.health_port))
    log.info(
        "modelcache webhook listening on %s:%d (HTTPS), liveness on :%d (HTTP)",
        settings.host,
        settings.port,
        settings.health_port,
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        ssl_context=tls.server_context,
        access_log=None,
        print=None,
        shutdown_timeout=20.0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
