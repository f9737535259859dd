"""Helpers shared by the tests: a cache populated by the real fetcher from the local Hub, the CLI in its own
process, a kubeconfig for the API stand-in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devtools.fetcher_env import fetcher_environment, run_fetcher
from devtools.hubserver import HubServer
from devtools.kubeapi import KubeApi
from modelcache.cache.layout import CacheLayout
from modelcache.contract import wire

TOKEN = "hf_test_token_0123456789"  # the local Hub's token (tests/conftest.py)
DAY = 86400.0


def populate(
    hub: HubServer, cache: Path, source: str = "hf://tiny/model", *, include: tuple[str, ...] = (), pod: str = "pod-0"
) -> subprocess.CompletedProcess[str]:
    """One init container's run of the fetcher, as the webhook configures it."""
    env = fetcher_environment(
        source, cache, include=include, pod=pod, extra={"HF_ENDPOINT": hub.url, "MODELCACHE_RETRY_BASE": "10ms"}
    )
    result = run_fetcher(env)
    assert result.returncode == 0, result.stderr
    return result


def modelcache(cache: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The console script's code in its own process, as an operator runs it (not a terminal: plain lines)."""
    return subprocess.run(
        [sys.executable, "-m", "modelcache", "--cache", str(cache), *args],
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


def age_use(cache: Path, key: str, days: float) -> None:
    """Pretend the model was last used `days` ago (what the usage file's mtime records)."""
    moment = time.time() - days * DAY
    os.utime(CacheLayout(cache).usage_path(key), (moment, moment))


def start_model_pod(api: KubeApi, key: str, name: str = "llm-0") -> None:
    """serving/<name>, running, with the label the webhook gives pods of the model `key`."""
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "serving", "labels": {wire.MODEL_KEY_LABEL: key}},
            "spec": {"containers": [{"name": "app", "image": "vllm/vllm-openai:v0.6.0"}]},
        }
    )
    api.set_status("Pod", name, {"phase": "Running"}, namespace="serving")


def aws_env(endpoint: str) -> dict[str, str]:
    """The fetcher's environment for a moto server (credentials moto accepts)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MODELCACHE_RETRY_BASE": "10ms",
    }


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def run_pass(controller: Any, now: Any) -> None:
    """One pass of the controller as the leader: the Lease taken or renewed first (its thread would)."""
    controller.elector.try_acquire_or_renew()
    controller.step(now)


def private_mount_namespace() -> list[str] | None:
    """A way to get a private mount namespace here (root, or unprivileged user namespaces), or None."""
    if shutil.which("unshare") is None:
        return None
    for way in (
        ["unshare", "--mount", "--propagation", "private"],
        ["unshare", "--user", "--map-root-user", "--mount"],
    ):
        probe = subprocess.run([*way, "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return way
    return None
