"""The admin CLI against a real cache directory, populated by the real fetcher from the local Hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.fetcher_env import fetcher_environment, run_fetcher
from devtools.hubserver import HubServer
from tests.fetcher.conftest import cache, hub

__all__ = ["cache", "hub", "modelcache", "populate", "write_kubeconfig"]


def populate(
    hub: HubServer, cache: Path, source: str = "hf://tiny/model", *, include: tuple[str, ...] = (), pod: str = "pod-0"
) -> subprocess.CompletedProcess[str]:
    """One init container's run of the fetcher, as the webhook configures it."""
    env = fetcher_environment(
        source, cache, include=include, pod=pod, extra={"HF_ENDPOINT": hub.url, "MODELCACHE_RETRY_BASE": "0.01"}
    )
    result = run_fetcher(env)
    assert result.returncode == 0, result.stderr
    return result


def modelcache(cache: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The console script's code in its own process, as an operator runs it (not a terminal: plain lines)."""
    return subprocess.run(
        [sys.executable, "-m", "admin", "--cache", str(cache), *args],
        env={**os.environ, "KUBECONFIG": "/nonexistent", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_kubeconfig(path: Path, url: str, token: str) -> Path:
    """A kubeconfig for the loopback API stand-in, as `kubectl config` would write it."""
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        f"clusters: [{{name: test, cluster: {{server: '{url}'}}}}]\n"
        f"users: [{{name: test, user: {{token: '{token}'}}}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: test}}]\n"
    )
    return path
