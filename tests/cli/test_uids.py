"""The fetchers of different workloads run under different UIDs, and the purge under yet another. Here
the fetcher runs as root and `modelcache rm` as UID 65532: a real process under a real UID (switching
needs root; skipped otherwise)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.fetcher_env import fetcher_environment, run_fetcher
from devtools.run_as import PRELOAD
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.contract import keys, sources
from tests.fetcher.test_s3 import bucket
from tests.helpers import aws_env

__all__ = ["bucket"]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching UIDs needs root")
ROOT = Path(__file__).resolve().parent.parent.parent
SOURCE = "s3://models/llama/v1"
KEY = keys.model_key(sources.parse_source(SOURCE))
FETCHER_UID, PURGE_UID = 0, 65532


@pytest.fixture
def volume() -> Iterator[Path]:
    """A cache volume every UID can reach (pytest's own temporary directories are root's alone)."""
    top = Path(tempfile.mkdtemp(prefix="modelcache-uids-"))
    top.chmod(0o777)
    (top / "cache").mkdir(mode=0o777)
    (top / "cache").chmod(0o777)
    yield top / "cache"
    shutil.rmtree(top)


def as_uid(uid: int, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m <module> ...` under `uid` (group 0, as the images run)."""
    module, rest = args[1], args[2:]
    assert module in PRELOAD
    return subprocess.run(
        [sys.executable, "-m", "devtools.run_as", str(uid), module, *rest],
        env={**env, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def fetch(cache: Path, moto: str) -> None:
    result = run_fetcher(fetcher_environment(SOURCE, cache, extra=aws_env(moto)))
    assert result.returncode == 0, result.stderr


def test_a_model_one_uid_published_is_removed_by_another(moto: str, bucket: str, volume: Path) -> None:
    fetch(volume, moto)
    tree = volume / "store" / KEY
    owners = {p.stat().st_uid for p in tree.rglob("*")}
    assert owners == {FETCHER_UID}
    assert {p.stat().st_mode & 0o777 for p in [tree, *tree.rglob("*")] if p.is_dir()} == {0o777}

    env = {**os.environ, "KUBECONFIG": "/nonexistent"}
    result = as_uid(PURGE_UID, ["-m", "modelcache", "--cache", str(volume), "rm", KEY, "--no-pod-check"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not tree.exists()
    assert check_ready(CacheLayout(volume), KEY) is None


def test_a_tree_the_purge_cannot_move_is_refused_whole_and_stays_ready(moto: str, bucket: str, volume: Path) -> None:
    fetch(volume, moto)
    (version,) = (volume / "store" / KEY).iterdir()
    weights = version / "weights"
    weights.chmod(0o755)  # as an older fetcher published it: only its UID may change it

    env = {**os.environ, "KUBECONFIG": "/nonexistent"}
    result = as_uid(PURGE_UID, ["-m", "modelcache", "--cache", str(volume), "rm", KEY, "--no-pod-check"], env)
    assert result.returncode == 1
    assert f"cannot be removed by uid {PURGE_UID}" in result.stdout
    assert f"owner uid {FETCHER_UID}, mode 755" in result.stdout
    assert "chmod -R a+rwX" in result.stdout
    assert check_ready(CacheLayout(volume), KEY) is not None  # nothing was half deleted
    assert (weights / "model.safetensors").stat().st_size == 9 << 20
