"""Errors of the fetcher: each kind has its own exit code, and a message that says what to do.

The message is written to the termination log (`kubectl describe pod` shows it under the init
container's last state) and to stderr. Adapters translate their library's errors into these at the
boundary, chained with `raise ... from`.
"""

from __future__ import annotations


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


class UnsupportedError(FetchError):
    """The source needs something this fetcher cannot do (for example Xet-only storage)."""

    exit_code = 9
    reason = "Unsupported"
