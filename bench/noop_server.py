"""The floor: an aiohttp HTTPS server that reads the body and answers a constant admission response.

Same framework, TLS setup, event loop and process model as the webhook, and no admission logic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aiohttp import web

from webhook.tls import TlsReloader

_ANSWER = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"x","allowed":true}}'


async def noop(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_ANSWER, content_type="application/json")


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-dir", type=Path, required=True)
    args = parser.parse_args()
    tls = TlsReloader(args.tls_dir)
    tls.reload()
    app = web.Application(client_max_size=7 * 1024 * 1024)
    app.router.add_post("/mutate", noop)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, ssl_context=tls.server_context, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
