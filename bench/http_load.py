"""A small HTTP/1.1 load generator over keep-alive TLS connections (asyncio streams, no client library).

Cheap per request, so on a 2-core machine the server, not the client, is what runs out of CPU.
Fixed-rate runs are open-loop: latency counts from each request's scheduled time, so a server that
falls behind shows its queueing instead of silently slowing the client down.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoadResult:
    sent: int
    failed: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return (self.sent - self.failed) / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def build_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def run_load(
    *,
    host: str,
    port: int,
    context: ssl.SSLContext,
    request: bytes,
    connections: int,
    seconds: float,
    rate: float | None,
) -> LoadResult:
    """Send `request` for `seconds`: at `rate` per second (open loop), or as fast as possible if None."""
    streams = [await asyncio.open_connection(host, port, ssl=context) for _ in range(connections)]
    latencies: list[float] = []
    failed = 0
    counter = 0
    start = time.perf_counter() + 0.05
    end = start + seconds

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal counter, failed
        while True:
            index = counter
            counter += 1
            scheduled = start + index / rate if rate else time.perf_counter()
            if scheduled >= end:
                return
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await _exchange(reader, writer, request)
            if status != 200:
                failed += 1
            latencies.append(time.perf_counter() - scheduled)

    await asyncio.gather(*(worker(r, w) for r, w in streams))
    elapsed = time.perf_counter() - start
    for _, writer in streams:
        writer.close()
    return LoadResult(sent=len(latencies), failed=failed, seconds=max(elapsed, seconds), latencies=latencies)
