"""The fetcher's settings: the env the webhook puts on the init container, read once and validated.

Light on imports on purpose: the cache-hit path imports this module and little else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fetcher.retrying import RetryPolicy
from modelcache.cache.patience import LockSettings
from modelcache.contract import wire
from modelcache.contract.annotation import SECRET_ANNOTATION, parse_include
from modelcache.contract.errors import ConfigError, ContractError
from modelcache.contract.keys import check_model_key, model_key
from modelcache.contract.quantities import size_bytes
from modelcache.contract.sources import Source, parse_source
from modelcache.runtime.logs import FORMATS
from modelcache.runtime.settings import EnvReader, Reader, read_boolean, read_choice, read_integer, read_seconds

# Read by the source adapters themselves, from the environment they are given.
_READ_BY_ADAPTERS = ("MODELCACHE_S3_ADDRESSING_STYLE", wire.HTTP_AUTHORIZATION_ENV)


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchSettings:
    source: Source
    key: str
    include: tuple[str, ...]
    cache_root: Path
    model_path: Path
    pin_path: Path | None  # the pod's own link to the version it got (the app's MODEL_PATH); None: none
    shared: bool
    refresh: bool
    pod: str
    namespace: str
    pod_uid: str
    node: str
    workers: int
    connect_timeout: float
    read_timeout: float
    termination_log: Path
    log_format: str
    lock: LockSettings
    retry: RetryPolicy
    secret_hint: str
    # Bytes per ranged request inside a large file; None: chosen from its size (32-256 MiB); 0: one stream.
    range_chunk: int | None = None
    # MODELCACHE_* variables this image does not know (a newer webhook may set some): logged, not fatal.
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FetchSettings:
        """Read and check every variable; one ConfigError names every problem."""
        env = EnvReader(environ)
        allow_http = env.get(wire.ALLOW_HTTP_ENV, read_boolean, False)
        source = env.required(wire.SOURCE_ENV, lambda value: _source(value, allow_http=allow_http))
        include: tuple[str, ...] = env.get(wire.INCLUDE_ENV, _include, ())
        key = env.required(wire.MODEL_KEY_ENV, check_model_key) or ""
        root = env.required(wire.CACHE_ROOT_ENV, _absolute) or ""
        model_path = env.get(wire.MODEL_PATH_ENV, str, "") or (wire.model_path(root, key) if key and root else "")
        pin_path = env.get(wire.PIN_PATH_ENV, str, "")
        env.problems += _consistency(source, include, key, root, model_path, pin_path)
        settings = cls(
            source=source,  # type: ignore[arg-type]  # None only with a problem, raised below
            key=key,
            include=include,
            cache_root=Path(root),
            model_path=Path(model_path),
            pin_path=Path(pin_path) if pin_path else None,
            shared=env.get(wire.SHARED_CACHE_ENV, read_boolean, True),
            refresh=env.get(wire.REFRESH_ENV, read_boolean, False),
            pod=env.get(wire.POD_NAME_ENV, str, ""),
            namespace=env.get(wire.POD_NAMESPACE_ENV, str, ""),
            pod_uid=env.get(wire.POD_UID_ENV, str, ""),
            node=env.get(wire.NODE_NAME_ENV, str, ""),
            workers=env.get("MODELCACHE_WORKERS", read_integer(minimum=1, maximum=64), default_workers()),
            connect_timeout=_tune(env, "MODELCACHE_CONNECT_TIMEOUT"),
            read_timeout=_tune(env, "MODELCACHE_READ_TIMEOUT"),
            termination_log=Path(env.get(wire.TERMINATION_LOG_ENV, str, wire.TERMINATION_LOG_PATH)),
            log_format=env.get("MODELCACHE_LOG_FORMAT", read_choice(*FORMATS), "text"),
            lock=_lock_settings(env),
            retry=RetryPolicy(attempts=int(_tune(env, "MODELCACHE_RETRIES")), base=_tune(env, "MODELCACHE_RETRY_BASE")),
            secret_hint=_secret_hint(env.get(wire.SECRET_NAME_ENV, str, "")),
            range_chunk=env.get("MODELCACHE_RANGE_CHUNK", _range_chunk, None),
            ignored=tuple(env.unknown(extra_known=_READ_BY_ADAPTERS)),
        )
        if env.problems or source is None:
            raise ConfigError(
                "the fetcher's environment is invalid: " + "; ".join(env.problems) + ". The webhook sets these "
                "variables; check that the webhook and the fetcher image are the same version."
            )
        return settings


# The fetcher's tuning, each with its reader and default (the webhook sets the lock's two from its settings).
TUNABLES: dict[str, tuple[Reader[float], float]] = {
    "MODELCACHE_CONNECT_TIMEOUT": (read_seconds(minimum=0.1), 10.0),
    "MODELCACHE_READ_TIMEOUT": (read_seconds(minimum=0.1), 60.0),
    "MODELCACHE_RETRIES": (Reader("integer", lambda v: float(read_integer(minimum=1, maximum=100)(v))), 8.0),
    "MODELCACHE_RETRY_BASE": (read_seconds(), 0.5),
    wire.LOCK_TIMEOUT_ENV: (read_seconds(minimum=0.001), wire.DEFAULT_LOCK_TIMEOUT),
    "MODELCACHE_LOCK_POLL": (read_seconds(minimum=0.01), 1.0),
    "MODELCACHE_LOCK_LOG_EVERY": (read_seconds(minimum=0.01), 10.0),
    "MODELCACHE_HEARTBEAT": (read_seconds(minimum=0.01), 5.0),
    "MODELCACHE_STALE_AFTER": (read_seconds(minimum=0.001), 60.0),
    wire.TAKEOVER_AFTER_ENV: (read_seconds(), wire.DEFAULT_TAKEOVER_AFTER),
}


def _tune(env: EnvReader, name: str) -> float:
    reader, default = TUNABLES[name]
    return env.get(name, reader, default)


def _lock_settings(env: EnvReader) -> LockSettings:
    return LockSettings(
        timeout=_tune(env, wire.LOCK_TIMEOUT_ENV),
        poll=_tune(env, "MODELCACHE_LOCK_POLL"),
        log_every=_tune(env, "MODELCACHE_LOCK_LOG_EVERY"),
        heartbeat_every=_tune(env, "MODELCACHE_HEARTBEAT"),
        stale_after=_tune(env, "MODELCACHE_STALE_AFTER"),
        takeover_after=_tune(env, wire.TAKEOVER_AFTER_ENV),
        enabled=env.get("MODELCACHE_LOCKING", read_boolean, True),
    )


def _source(value: str, *, allow_http: bool) -> Source:
    try:
        return parse_source(value, allow_http=allow_http)
    except ContractError as err:
        raise ValueError(str(err)) from err


def _include(value: str) -> tuple[str, ...]:
    if not value:
        return ()
    try:
        return parse_include(value)
    except ContractError as err:
        raise ValueError(str(err)) from err


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("expected an absolute path")
    return value


def _consistency(
    source: Source | None, include: tuple[str, ...], key: str, root: str, model_path: str, pin_path: str
) -> list[str]:
    """The variables must agree with each other: a mismatch means the webhook and the image differ."""
    problems = []
    if source is not None and key and model_key(source, include) != key:
        problems.append(
            f"{wire.MODEL_KEY_ENV}={key!r} is not the key of {source.uri} with include {include!r} "
            f"({model_key(source, include)!r}); the webhook and the fetcher image are different versions"
        )
    if key and root and model_path != wire.model_path(root, key):
        problems.append(f"{wire.MODEL_PATH_ENV}={model_path!r}, expected {wire.model_path(root, key)!r}")
    if pin_path and (not pin_path.startswith("/") or (root and (pin_path + "/").startswith(root + "/"))):
        problems.append(f"{wire.PIN_PATH_ENV}={pin_path!r} is not an absolute path outside the cache")
    return problems


def _secret_hint(secret_name: str) -> str:
    return f"the Secret {secret_name!r}" if secret_name else f"a Secret named by annotation {SECRET_ANNOTATION}"


def available_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> float:
    """CPUs this container may use: its cgroup v2 quota (the CPU limit), else the machine's count."""
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            return max(float(quota) / float(period), 0.1)
    except (OSError, ValueError):
        pass
    return float(os.cpu_count() or 1)


def _range_chunk(value: str) -> int | None:
    if value.strip().lower() == "auto":
        return None
    try:
        size = size_bytes(value)
    except ValueError:
        raise ValueError("expected auto, 0, or a size such as 64Mi") from None
    if size and size < (1 << 20):
        raise ValueError("expected auto, 0, or a size of at least 1Mi")
    return size


def default_workers() -> int:
    """Four download streams per usable CPU, 4 to 8: streams mostly wait on the network (and, inside a
    large file, on an origin's per-connection cap), while hashing runs beside them (docs/benchmarks.md:
    8 streams on 2 CPUs were faster than 4 on a local origin and behind a 60 MB/s cap)."""
    return int(min(8, max(4, round(4 * available_cpus()))))


# Every variable the fetcher reads: (name, default, meaning). The webhook sets the first group.
ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    (wire.SOURCE_ENV, "(required)", "the model: hf://org/name[@revision], s3://bucket/prefix or https://host/file"),
    (wire.MODEL_KEY_ENV, "(required)", "its key (checked against the source and include patterns)"),
    (wire.INCLUDE_ENV, "(all files)", "comma-separated include patterns"),
    (wire.CACHE_ROOT_ENV, "(required)", "where the cache volume is mounted"),
    (wire.MODEL_PATH_ENV, "<root>/ready/<key>", "the cache's link to the ready model (checked)"),
    (wire.PIN_PATH_ENV, "(none)", "the pod's pin: a link here to the exact version it got (the app's MODEL_PATH)"),
    (wire.SHARED_CACHE_ENV, "true", "false for a pod that opted out (pod-local emptyDir)"),
    (wire.REFRESH_ENV, "false", "true: re-resolve a branch or tag and publish the newest version"),
    (wire.POD_NAME_ENV, "the host name", "who we are, for the owner and pin records"),
    (wire.POD_NAMESPACE_ENV, "(none)", "our namespace, for the owner and pin records"),
    (wire.POD_UID_ENV, "(none)", "our pod's UID, for the pin record"),
    (wire.NODE_NAME_ENV, "unknown", "our node, for the owner record"),
    (wire.SECRET_NAME_ENV, "(none)", "the annotated Secret, named in messages"),
    (wire.ALLOW_HTTP_ENV, "false", "accept an http:// source (the webhook sets it when its settings allow http)"),
    (wire.HTTP_AUTHORIZATION_ENV, "(none)", "the Authorization header for https sources (from the Secret)"),
    ("MODELCACHE_S3_ADDRESSING_STYLE", "path with a custom endpoint", "path, virtual or auto"),
    (wire.LOCK_TIMEOUT_ENV, "1h", "give up waiting for another pod's download after this long (exit 7)"),
    (wire.TAKEOVER_AFTER_ENV, "10m", "take over a lock whose holder shows no heartbeat this long; 0 never"),
    (
        "MODELCACHE_LOCK_POLL",
        "1s",
        "the longest time between two tries for the lock (+-50 %; a tenth of the wait before)",
    ),
    ("MODELCACHE_LOCK_LOG_EVERY", "10s", "how often a waiter logs who holds the lock and how far it got"),
    ("MODELCACHE_HEARTBEAT", "5s", "how often the holder refreshes its owner record"),
    ("MODELCACHE_STALE_AFTER", "1m", "report a holder without a heartbeat this long as STALE"),
    ("MODELCACHE_LOCKING", "true", "false disables the lock (correctness does not need it)"),
    (
        "MODELCACHE_WORKERS",
        "4 per usable CPU, 4 to 8",
        "parallel downloads: files, and ranged requests inside a large file",
    ),
    (
        "MODELCACHE_RANGE_CHUNK",
        "auto",
        "bytes per ranged request inside a large file (auto: 32-256 MiB by size; 0: one stream)",
    ),
    ("MODELCACHE_CONNECT_TIMEOUT", "10s", "connect timeout of each request"),
    ("MODELCACHE_READ_TIMEOUT", "1m", "read timeout of each request"),
    ("MODELCACHE_RETRIES", "8", "attempts per request, for resolving and for each file"),
    ("MODELCACHE_RETRY_BASE", "500ms", "backoff base (exponential, full jitter, capped at 30 s; Retry-After wins)"),
    (wire.TERMINATION_LOG_ENV, wire.TERMINATION_LOG_PATH, "where the final one-paragraph message goes"),
    ("MODELCACHE_LOG_FORMAT", "text", "text or json; every line names the model key"),
    ("HF_ENDPOINT, HF_TOKEN", "https://huggingface.co", "the Hub (or a mirror) and its token"),
    ("AWS_*", "boto3's chain", "S3: AWS_ENDPOINT_URL, keys, AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, ..."),
)


def help_text() -> str:
    """`modelcache-fetch --help`: the environment contract with the webhook."""
    import textwrap

    intro = "usage: modelcache-fetch   (or python -m fetcher)\n\n" + textwrap.fill(
        "The init container the modelcache webhook injects: makes the model ready on the cache volume (a "
        "cache hit, or one download shared by every pod), links the pod's MODEL_PATH to it and exits 0. "
        "Otherwise it exits with a code that tells the kind of failure (docs/fetcher.md) and a message in "
        "the termination log. It takes no arguments: the webhook configures it through these variables.",
        110,
    )
    lines = [intro, "", "Environment:"]
    for name, default, meaning in ENVIRONMENT:
        lines.append(f"  {name}  (default: {default})")
        lines += textwrap.wrap(meaning, 100, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines) + "\n"
