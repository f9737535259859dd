"""The environment the webhook gives the fetcher's init container, for running the fetcher locally."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from modelcache.contract import annotation, keys, sources, wire


def fetcher_environment(
    source: str,
    cache_root: Path,
    *,
    include: tuple[str, ...] = (),
    pod: str = "pod-0",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    parsed = sources.parse_source(source, allow_http=True)
    include = annotation.parse_include(",".join(include)) if include else ()
    key = keys.model_key(parsed, include)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cache_root.parent),
        wire.SOURCE_ENV: parsed.uri,
        wire.MODEL_KEY_ENV: key,
        wire.CACHE_ROOT_ENV: str(cache_root),
        wire.MODEL_PATH_ENV: wire.model_path(str(cache_root), key),
        wire.SHARED_CACHE_ENV: "true",
        wire.POD_NAME_ENV: pod,
        wire.POD_NAMESPACE_ENV: "serving",
        wire.NODE_NAME_ENV: "node-a",
        "MODELCACHE_TERMINATION_LOG": str(cache_root.parent / f"{pod}.termination-log"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    if include:
        env[wire.INCLUDE_ENV] = ",".join(include)
    env.update(extra or {})
    return env


def run_fetcher(env: Mapping[str, str], *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fetcher"], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def start_fetcher(env: Mapping[str, str], *, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
    return subprocess.Popen([sys.executable, "-m", "fetcher"], env=dict(env), stdout=out, stderr=out)
