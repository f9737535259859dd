"""The fetcher's settings: the env the webhook puts on the init container, read once and validated.

Light on imports on purpose: the cache-hit path imports this module and little else.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fetcher import contract
from fetcher.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LockSettings:
    timeout: float = 3600.0  # give up waiting (the pod's init container then restarts)
    poll: float = 1.0  # seconds between attempts, with +-50 % jitter
    log_every: float = 10.0
    heartbeat_every: float = 5.0
    stale_after: float = 60.0  # report the holder as stale when its record has not changed for this long
    takeover_after: float = 600.0  # then take over after this long (0: never)
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 8
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 300.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter; a server's Retry-After wins, within a cap."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        return random.uniform(0, min(self.cap, self.base * 2**attempt))  # noqa: S311 (jitter)


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchSettings:
    source: contract.Source
    key: str
    include: tuple[str, ...]
    cache_root: Path
    model_path: Path
    pin_path: Path | None  # the pod's own link to the version it got (the app's MODEL_PATH); None: none
    shared: bool
    refresh: bool
    pod: str
    namespace: str
    node: str
    workers: int
    connect_timeout: float
    read_timeout: float
    termination_log: Path
    log_format: str
    lock: LockSettings
    retry: RetryPolicy
    secret_hint: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FetchSettings:
        """Read and check every variable; one ConfigError names every problem."""
        problems: list[str] = []
        reader = _Reader(environ, problems)
        source = reader.source()
        include = reader.include()
        key = reader.required(contract.MODEL_KEY_ENV)
        root = reader.required(contract.CACHE_ROOT_ENV)
        if source is not None and key and contract.model_key(source, include) != key:
            problems.append(
                f"{contract.MODEL_KEY_ENV}={key!r} is not the key of {source.uri} with include {include!r} "
                f"({contract.model_key(source, include)!r}); the webhook and the fetcher image are different versions"
            )
        if root and not root.startswith("/"):
            problems.append(f"{contract.CACHE_ROOT_ENV}={root!r} is not an absolute path")
        model_path = environ.get(contract.MODEL_PATH_ENV) or (contract.model_path(root, key) if key and root else "")
        if key and root and model_path != contract.model_path(root, key):
            problems.append(f"{contract.MODEL_PATH_ENV}={model_path!r}, expected {contract.model_path(root, key)!r}")
        pin_path = environ.get(contract.PIN_PATH_ENV, "")
        if pin_path and (not pin_path.startswith("/") or (root and (pin_path + "/").startswith(root + "/"))):
            problems.append(f"{contract.PIN_PATH_ENV}={pin_path!r} is not an absolute path outside the cache")
        lock = LockSettings(
            timeout=reader.number("MODELCACHE_LOCK_TIMEOUT", 3600.0),
            poll=reader.number("MODELCACHE_LOCK_POLL", 1.0, minimum=0.01),
            log_every=reader.number("MODELCACHE_LOCK_LOG_EVERY", 10.0, minimum=0.01),
            heartbeat_every=reader.number("MODELCACHE_HEARTBEAT", 5.0, minimum=0.01),
            stale_after=reader.number("MODELCACHE_STALE_AFTER", 60.0),
            takeover_after=reader.number("MODELCACHE_TAKEOVER_AFTER", 600.0, minimum=0.0),
            enabled=reader.flag("MODELCACHE_LOCKING", True),
        )
        retry = RetryPolicy(
            attempts=int(reader.number("MODELCACHE_RETRIES", 8, minimum=1)),
            base=reader.number("MODELCACHE_RETRY_BASE", 0.5, minimum=0.0),
        )
        workers = int(reader.number("MODELCACHE_WORKERS", default_workers(), minimum=1))
        connect_timeout = reader.number("MODELCACHE_CONNECT_TIMEOUT", 10.0, minimum=0.1)
        read_timeout = reader.number("MODELCACHE_READ_TIMEOUT", 60.0, minimum=0.1)
        shared = reader.flag(contract.SHARED_CACHE_ENV, True)
        refresh = reader.flag(contract.REFRESH_ENV, False)
        log_format = environ.get("MODELCACHE_LOG_FORMAT", "text")
        if log_format not in ("text", "json"):
            problems.append(f"MODELCACHE_LOG_FORMAT={log_format!r}: expected text or json")
        if problems or source is None:
            raise ConfigError(
                "the fetcher's environment is invalid: " + "; ".join(problems) + ". The webhook sets these "
                "variables; check that the webhook and the fetcher image are the same version."
            )
        secret_name = environ.get(contract.SECRET_NAME_ENV, "")
        return cls(
            source=source,
            key=contract.check_model_key(key),
            include=include,
            cache_root=Path(root),
            model_path=Path(model_path),
            pin_path=Path(pin_path) if pin_path else None,
            shared=shared,
            refresh=refresh,
            pod=environ.get(contract.POD_NAME_ENV, ""),
            namespace=environ.get(contract.POD_NAMESPACE_ENV, ""),
            node=environ.get(contract.NODE_NAME_ENV, ""),
            workers=workers,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            termination_log=Path(environ.get("MODELCACHE_TERMINATION_LOG", "/dev/termination-log")),
            log_format=log_format,
            lock=lock,
            retry=retry,
            secret_hint=(
                f"the Secret {secret_name!r}"
                if secret_name
                else f"a Secret named by annotation {contract.SECRET_ANNOTATION}"
            ),
        )


def available_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> float:
    """CPUs this container may use: its cgroup v2 quota (the CPU limit), else the machine's count."""
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            return max(float(quota) / float(period), 0.1)
    except (OSError, ValueError):
        pass
    return float(os.cpu_count() or 1)


def default_workers() -> int:
    """Two download threads per usable CPU, 2 to 8: more only make hashing and copying compete."""
    return int(min(8, max(2, round(2 * available_cpus()))))


class _Reader:
    def __init__(self, environ: Mapping[str, str], problems: list[str]) -> None:
        self.environ = environ
        self.problems = problems

    def required(self, name: str) -> str:
        value = self.environ.get(name, "")
        if not value:
            self.problems.append(f"{name} is not set")
        return value

    def source(self) -> contract.Source | None:
        value = self.required(contract.SOURCE_ENV)
        if not value:
            return None
        try:
            return contract.parse_source(value, allow_http=self.flag(contract.ALLOW_HTTP_ENV, False))
        except contract.ContractError as err:
            self.problems.append(f"{contract.SOURCE_ENV}: {err}")
            return None

    def include(self) -> tuple[str, ...]:
        value = self.environ.get(contract.INCLUDE_ENV, "")
        if not value:
            return ()
        try:
            return contract.parse_include(value)
        except contract.ContractError as err:
            self.problems.append(f"{contract.INCLUDE_ENV}: {err}")
            return ()

    def number(self, name: str, default: float, *, minimum: float = 0.001) -> float:
        value = self.environ.get(name)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not number >= minimum:
            self.problems.append(f"{name}={value!r}: expected a number >= {minimum:g}")
            return default
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.environ.get(name)
        if value is None:
            return default
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return False
        self.problems.append(f"{name}={value!r}: expected true or false")
        return default
