"""The webhook's init container env, handed to the real fetcher: what one injects, the other accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from devtools.admission import admission_review
from webhook.config import Settings
from webhook.handlers import review_admission
from webhook.review import decode_patch

CLOSED = "http://127.0.0.1:9"  # nothing listens: every source fails fast, on loopback, after its env was accepted


def injected_env(source: str, settings: Settings, cache: Path) -> dict[str, str]:
    annotations = {"modelcache.io/model": source, "modelcache.io/include": "*.safetensors, config.json"}
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.37"}]},
    }
    result = review_admission(json.dumps(admission_review(pod, "ns")).encode(), settings=settings)
    mutated = jsonpatch.apply_patch(pod, decode_patch(result.body))
    (fetcher,) = mutated["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in fetcher["env"] if "value" in e}
    env["MODELCACHE_CACHE_ROOT"] = str(cache)
    env["MODEL_PATH"] = env["MODEL_PATH"].replace(settings.mount_path, str(cache), 1)
    env["MODELCACHE_PIN_PATH"] = str(cache.parent / "pin" / "model")  # the pod's pin emptyDir
    env["MODELCACHE_TERMINATION_LOG"] = str(cache.parent / "termination-log")
    env["MODELCACHE_RETRIES"] = "1"
    return env


@pytest.mark.parametrize(
    ("source", "settings"),
    [
        pytest.param("hf://org/model@v1", Settings(hf_endpoint=CLOSED), id="hf"),
        pytest.param("s3://models/llama", Settings(s3_endpoint=CLOSED), id="s3"),
        pytest.param("https://127.0.0.1:9/m.bin#sha256=" + "a" * 64, Settings(), id="https"),
        pytest.param("http://127.0.0.1:9/m.bin", Settings(allow_http=True), id="http-when-allowed"),
    ],
)
def test_the_fetcher_accepts_every_environment_the_webhook_injects(
    source: str, settings: Settings, tmp_path: Path
) -> None:
    """Exit 2 would mean the two sides disagree; the fetch itself fails on a closed loopback port (exit 8)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {
        **injected_env(source, settings, cache),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = subprocess.run(
        [sys.executable, "-m", "fetcher"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 8, (cache.parent / "termination-log").read_text()


HOLD_LOCK = """
import sys, time
from pathlib import Path
from modelcache.cache.layout import CacheLayout
from modelcache.cache.locking import ModelLock
from modelcache.cache.patience import LockSettings
from modelcache.cache.owners import Identity, Progress
layout = CacheLayout(Path(sys.argv[1]))
layout.ensure()
lock = ModelLock(layout, sys.argv[2], settings=LockSettings(),
                 identity=Identity.here(pod="llm-9", namespace="serving", node="node-b"))
lock.acquire()
lock.start_heartbeat(Progress(), attempt="")
print("locked", flush=True)
time.sleep(600)
"""


def test_the_lock_patience_set_on_the_webhook_reaches_the_fetcher_and_its_advice_names_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    settings = Settings(hf_endpoint=CLOSED, fetcher_lock_timeout=2.0, fetcher_takeover_after=0.0)
    env = injected_env("hf://org/model@v1", settings, cache)
    assert (env["MODELCACHE_LOCK_TIMEOUT"], env["MODELCACHE_TAKEOVER_AFTER"]) == ("2s", "0s")  # not the defaults
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(cache), env["MODELCACHE_MODEL_KEY"]], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        result = subprocess.run(
            [sys.executable, "-m", "fetcher"],
            env={**env, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MODELCACHE_LOCK_POLL": "100ms"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 7
    message = (cache.parent / "termination-log").read_text()
    assert "held by pod serving/llm-9 on node node-b" in message
    assert "MODELCACHE_FETCHER_LOCK_TIMEOUT (now 2s)" in message
    assert "MODELCACHE_FETCHER_TAKEOVER_AFTER" in message
