"""A reverse proxy on loopback that injects faults in front of a real server (a moto S3, a Hub server).

Requests go through unchanged, except those a rule matches: a rule answers with a status of its own
(``503 SlowDown`` as S3 writes it) for a number of matching requests, or runs a hook first (to change the
object behind the proxy between a listing and a download). Every request is counted, so a test can say
how many times one object was asked for.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from devtools.background import BackgroundLoop

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


@dataclass
class Rule:
    """Answer `times` requests whose method is `method` and whose path ends with `suffix` (and whose query
    lacks `without`) with `status`, or run `hook` before forwarding them."""

    method: str
    suffix: str
    times: int
    status: int = 503
    body: bytes = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    hook: Callable[[], None] | None = None
    without: str = ""

    def matches(self, request: web.Request) -> bool:
        query_ok = not self.without or self.without not in request.query_string
        return self.times > 0 and request.method == self.method and request.path.endswith(self.suffix) and query_ok


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.requests: Counter[tuple[str, str]] = Counter()
        self.url = ""
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests[request.method, request.path] += 1
        for rule in self.rules:
            if rule.matches(request):
                rule.times -= 1
                if rule.hook is None:
                    return web.Response(status=rule.status, body=rule.body, content_type="application/xml")
                await asyncio.get_running_loop().run_in_executor(None, rule.hook)
                break
        if self._session is None:
            raise RuntimeError("the proxy is not running")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body or None, allow_redirects=False
        ) as upstream:
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            response = web.StreamResponse(status=upstream.status, headers=out)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for piece in upstream.content.iter_any():  # streamed: watches go through as they come
                await response.write(piece)
            await response.write_eof()
            return response

    def count(self, method: str, suffix: str) -> int:
        return sum(n for (m, path), n in self.requests.items() if m == method and path.endswith(suffix))

    @contextmanager
    def running(self) -> Iterator[FaultProxy]:
        background = BackgroundLoop("fault-proxy")

        async def start() -> web.AppRunner:
            self._session = aiohttp.ClientSession(auto_decompress=False)
            app = web.Application(client_max_size=1 << 30)
            app.router.add_route("*", "/{path:.*}", self.handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)  # open watches end at once
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return runner

        runner = background.run(start())
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"

        async def stop() -> None:
            await runner.cleanup()
            if self._session is not None:
                await self._session.close()

        try:
            yield self
        finally:
            background.run(stop())
            background.close()
