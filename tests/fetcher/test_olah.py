"""Smoke test against olah, a third-party Hub-compatible server, in mirror mode in front of our Hub."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.fetcher_env import fetcher_environment, run_fetcher
from devtools.hubserver import HubServer
from devtools.webhook_process import free_port
from modelcache.contract import wire

OLAH = Path(sys.executable).parent / "olah-cli"


@pytest.fixture
def olah(hub: HubServer, tmp_path: Path) -> Iterator[str]:
    if not OLAH.exists():
        pytest.skip("olah is not installed")
    port = free_port()
    upstream, cdn = hub.url.split("//")[1], hub.cdn_url.split("//")[1]
    command = [
        str(OLAH), "--host", "127.0.0.1", "--port", str(port), "--hf-scheme", "http", "--hf-netloc", upstream,
        "--hf-lfs-netloc", cdn, "--mirror-netloc", f"127.0.0.1:{port}", "--mirror-lfs-netloc", f"127.0.0.1:{port}",
        "--repos-path", str(tmp_path / "olah-repos"), "--log-path", str(tmp_path / "olah-logs"),
    ]  # fmt: skip
    log = (tmp_path / "olah.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail((tmp_path / "olah.log").read_text())
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_fetching_through_olah_gives_a_verified_model_and_olah_caches_it(
    hub: HubServer, olah: str, tmp_path: Path
) -> None:
    model_bytes = sum(item.size for item in hub.repos["tiny/model"].commits[hub.repos["tiny/model"].main].values())
    for attempt in ("first", "second"):
        cache = tmp_path / f"cache-{attempt}"
        cache.mkdir()
        env = fetcher_environment("hf://tiny/model", cache, extra={"HF_ENDPOINT": olah})
        result = run_fetcher(env)
        assert result.returncode == 0, result.stderr
        assert "downloaded" in result.stderr
        model = Path(env[wire.MODEL_PATH_ENV])
        assert (model / "model.safetensors").stat().st_size > 0
    # The second cache was filled from olah's own cache: the origin sent the model once.
    assert hub.bytes_served == model_bytes
