"""The errors of the contract: a value that breaks it, and the kinds of failure a fetch ends with.

:class:`ContractError` is an annotation (or an env value read back by the fetcher) that does not follow
the contract; its message names the annotation, the value, what was expected and an example.

:class:`FetchError` and its leaves are the fetcher's failure kinds. Each has an exit code and a reason;
the fetcher writes the message to the termination log (`kubectl describe pod` shows it under the init
container's last state) and to stderr, the outcome records on the volume carry the reason, and the cache
agent counts by it. Adapters translate their library's errors into these at the boundary, chained with
`raise ... from`.
"""

from __future__ import annotations

_SHOWN_VALUE_LENGTH = 120


class ContractError(ValueError):
    """An annotation value that does not follow the contract."""

    def __init__(self, annotation: str, value: str, problem: str, *, expected: str, example: str) -> None:
        self.annotation = annotation
        self.value = value
        self.problem = problem
        super().__init__(
            f"annotation {annotation}={show_value(value)} is invalid: {problem}. "
            f"Expected {expected}, for example {annotation}: {example!r}."
        )


def show_value(value: str) -> str:
    """Quote a value for a message: escaped, so control characters show, and cut if long."""
    if len(value) > _SHOWN_VALUE_LENGTH:
        return repr(value[:_SHOWN_VALUE_LENGTH]) + f"... ({len(value)} characters)"
    return repr(value)


class FetchError(Exception):
    """Base of every error the fetcher reports; `exit_code` tells the kind apart."""

    exit_code = 1
    reason = "Failed"


class ConfigError(FetchError):
    """The init container's environment is wrong (a webhook/fetcher version mismatch, or edited by hand)."""

    exit_code = 2
    reason = "BadConfiguration"


class NotFoundError(FetchError):
    """The model, revision, bucket, prefix or URL does not exist."""

    exit_code = 3
    reason = "NotFound"


class AccessDeniedError(FetchError):
    """Credentials are missing or refused (gated or private model, denied bucket, 401/403)."""

    exit_code = 4
    reason = "AccessDenied"


class IntegrityError(FetchError):
    """Downloaded bytes do not match the declared size or digest. Nothing was published."""

    exit_code = 5
    reason = "IntegrityError"


class DiskFullError(FetchError):
    """Not enough free space on the cache volume (checked before downloading, and on ENOSPC)."""

    exit_code = 6
    reason = "DiskFull"


class LockTimeoutError(FetchError):
    """Another pod held the model's lock for longer than the lock timeout."""

    exit_code = 7
    reason = "LockTimeout"


class TransferError(FetchError):
    """The source kept failing (network, 5xx, 429) after every retry."""

    exit_code = 8
    reason = "TransferFailed"


class StoppedError(FetchError):
    """The fetcher was told to stop (SIGTERM: the pod is being deleted); what was staged stays resumable."""

    exit_code = 143  # 128 + SIGTERM, as a process killed by it would report
    reason = "Stopped"


class CacheNotWritableError(FetchError):
    """The cache volume refuses the fetcher's writes: its root's owner and mode, or a read-only mount."""

    exit_code = 10
    reason = "CacheNotWritable"
