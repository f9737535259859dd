"""A cache volume whose root the fetcher may not write: what many RWX provisioners create (0755, owned
by someone else). Real processes, real directory modes, real kernel permission checks.

As root, the volume is given to another owner and the programs run without the capabilities that
bypass file permissions (setpriv), so the kernel refuses them exactly as it refuses a fetcher of
another UID; a non-root run gets a root it owns but may not write (0555).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubServer
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.contract import keys, sources
from tests.helpers import private_mount_namespace

ROOT = Path(__file__).resolve().parent.parent.parent
TINY = keys.model_key(sources.parse_source("hf://tiny/model"))
PROVISIONER_UID = 12345  # the owner a provisioner gave the volume root
AS_ROOT = os.geteuid() == 0
# Root without the capabilities that bypass permission checks: the kernel judges it as an ordinary UID.
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown"] if AS_ROOT else []


@pytest.fixture
def volume() -> Iterator[Path]:
    """A provisioner-made volume root: another owner's and 0755 (as root), or ours and 0555."""
    base = Path(tempfile.mkdtemp(prefix="modelcache-volume-"))
    base.chmod(0o777)  # the termination log goes beside the volume
    root = base / "cache"
    root.mkdir()
    if AS_ROOT:
        os.chown(root, PROVISIONER_UID, PROVISIONER_UID)
    root.chmod(0o755 if AS_ROOT else 0o555)
    yield root
    root.chmod(0o755)
    shutil.rmtree(base)


def _fetch(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*UNPRIVILEGED, sys.executable, "-m", "fetcher"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_volume_root_the_fetcher_cannot_write_is_a_classified_error_that_says_what_to_fix(
    hub: HubServer, volume: Path
) -> None:
    env = fetcher_environment("hf://tiny/model", volume, extra={"HF_ENDPOINT": hub.url})
    result = _fetch(env)
    assert result.returncode == 10, result.stderr
    assert "this is a bug" not in result.stderr
    assert "Traceback" not in result.stderr
    message = (volume.parent / "pod-0.termination-log").read_text()
    st = volume.stat()
    assert message.startswith("modelcache fetcher: CacheNotWritable: cannot write the cache volume: Permission denied")
    assert f"{volume} (owner {st.st_uid}:{st.st_gid}, mode {st.st_mode & 0o777:04o})" in message
    assert f"the fetcher runs as UID {os.geteuid()}, GID {os.getegid()}" in message
    fixes = message.index("(1) make the volume root writable"), message.index("(2) or run the fetcher as the owner")
    assert fixes[0] < fixes[1]
    assert f"chmod 0777 {volume}" in message
    assert f"securityContext.runAsUser (and runAsGroup) to {st.st_uid}" in message
    assert "MODELCACHE_FETCHER_UID" in message
    assert os.listdir(volume) == []


def _prepare(volume: Path, *, privileges: list[str]) -> subprocess.CompletedProcess[str]:
    command = [*privileges, sys.executable, "-m", "modelcache.cli.main", "--cache", str(volume), "prepare"]
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)


def test_modelcache_prepare_opens_the_root_and_the_next_fetcher_just_works(hub: HubServer, volume: Path) -> None:
    prepared = _prepare(volume, privileges=[])  # as root (a one-off pod), or as the root's owner
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert "is now mode 0777: fetchers of any UID can write it" in prepared.stdout
    assert volume.stat().st_mode & 0o777 == 0o777
    env = fetcher_environment("hf://tiny/model", volume, extra={"HF_ENDPOINT": hub.url})
    result = _fetch(env)
    assert result.returncode == 0, result.stderr
    assert check_ready(CacheLayout(volume), TINY) is not None
    assert "already writable for every UID; nothing to do" in _prepare(volume, privileges=[]).stdout


@pytest.mark.skipif(not AS_ROOT, reason="needs root to give the volume root another owner")
def test_modelcache_prepare_as_a_user_that_may_not_change_the_root_says_who_may(volume: Path) -> None:
    refused = _prepare(volume, privileges=UNPRIVILEGED)
    assert refused.returncode == 1
    owner = f"owner {PROVISIONER_UID}:{PROVISIONER_UID}, mode 0755"
    assert f"cannot change the mode of {volume} ({owner}) as UID 0, GID 0" in refused.stdout
    assert "run this as the directory's owner or as root" in refused.stdout
    assert volume.stat().st_mode & 0o777 == 0o755


UNSHARE = private_mount_namespace()


@pytest.mark.skipif(UNSHARE is None, reason="no private mount namespace here (needs root or user namespaces)")
def test_a_cache_volume_mounted_read_only_is_a_classified_error(hub: HubServer, tmp_path: Path) -> None:
    assert UNSHARE is not None
    cache = tmp_path / "cache"
    cache.mkdir()
    env = fetcher_environment("hf://tiny/model", cache, extra={"HF_ENDPOINT": hub.url})
    read_only = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    result = subprocess.run(
        [*UNSHARE, "sh", "-c", read_only, str(cache), sys.executable, "-m", "fetcher"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 10, result.stderr
    message = (tmp_path / "pod-0.termination-log").read_text()
    assert f"CacheNotWritable: the cache volume at {cache} is mounted read-only" in message
    assert "check the PVC's access mode (ReadWriteMany)" in message
