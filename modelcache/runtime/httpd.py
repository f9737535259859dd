"""A tiny HTTP server on a thread for probes and metrics: the controller's /healthz, the cache agent's
/healthz and /metrics. Standard library only; each route returns (status, content type, body)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = Callable[[], tuple[int, str, bytes]]
TEXT = "text/plain; charset=utf-8"


def serve(port: int, routes: Mapping[str, Route], *, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104 (the kubelet and Prometheus reach the pod IP)
    """Serve GET on `routes` (404 elsewhere) until the process ends or `shutdown()` is called."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            status, content_type, body = route() if route else (404, TEXT, b"not found\n")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True).start()
    return server
