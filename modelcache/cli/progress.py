"""Progress of long work: a bar on a terminal (tqdm), plain lines every few seconds otherwise."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, TextIO

from modelcache.contract.quantities import format_bytes

PLAIN_EVERY = 5.0  # seconds between plain lines (logs, CI, kubectl logs)


class Meter:
    """Bytes done of a total that may grow (a download's total is known only once it is planned)."""

    def __init__(self, label: str, total: int, *, stream: TextIO) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream
        self._bar: Any = None
        self._last_line = 0.0
        if stream.isatty():
            try:  # a terminal only; the webhook image (the cache agent's) has no tqdm: plain lines there
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total or None, desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=stream)

    def add(self, count: int) -> None:
        self.update(self.done + count, self.total)

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self._bar is not None:
            self._bar.total = total or None
            self._bar.n = done
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_line >= PLAIN_EVERY:
            self._last_line = now
            share = f" ({done * 100 // total} %)" if total else ""
            self.stream.write(f"{self.label}: {format_bytes(done)} of {format_bytes(total)}{share}\n")
            self.stream.flush()

    def __enter__(self) -> Meter:
        self._last_line = time.monotonic()  # the first plain line after PLAIN_EVERY: short work stays quiet
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()
