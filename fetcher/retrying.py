"""One retry policy for everything the fetcher asks a source: resolving the version and streaming files.

Transient failures (connections, timeouts, 429, 5xx) raise :class:`RetryableError`; :func:`retry` calls
again after exponential backoff with full jitter, or after the server's ``Retry-After`` (within a cap),
and turns the last failure into a :class:`TransferError` that names the endpoint. Libraries under us do
not retry on their own (urllib3 ``retries`` only follow redirects, botocore makes one attempt), so one
request is never multiplied by two policies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from modelcache.contract.errors import TransferError

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryableError(Exception):
    """A transient failure (connection, timeout, 429, 5xx); `retry_after` in seconds when the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CancelledError(Exception):
    """The work was told to stop (another file failed, or the fetcher is shutting down)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 8
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 300.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter; a server's Retry-After wins, within a cap."""
        import random  # off the cache-hit path, which never retries

        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        return random.uniform(0, min(self.cap, self.base * 2**attempt))  # noqa: S311 (jitter)


def retry(
    call: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    advice: str,
    cancel: threading.Event | None = None,
    progress: Callable[[], str] = lambda: "",
) -> T:
    """`call()` until it returns, retrying RetryableError; TransferError after the last attempt.

    `what` names the work and its endpoint ("resolving hf://org/name at https://hub"), `advice` what to
    check when it keeps failing, `progress` where a retry resumes ("from byte 1024"), `cancel` stops the
    waits early.
    """
    for attempt in range(policy.attempts):
        if cancel is not None and cancel.is_set():
            raise CancelledError
        try:
            return call()
        except RetryableError as err:
            if attempt == policy.attempts - 1:
                raise TransferError(
                    f"{what} failed {policy.attempts} times, the last time with: {err}. {advice}"
                ) from err
            pause = policy.delay(attempt, err.retry_after)
            where = progress()
            log.warning(
                "%s: %s; retrying in %.1f s%s (attempt %d of %d)",
                what,
                err,
                pause,
                f" {where}" if where else "",
                attempt + 2,
                policy.attempts,
            )
            if cancel is not None:
                if cancel.wait(pause):
                    raise CancelledError from err
            else:
                time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
