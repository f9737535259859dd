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
