"""The fetcher image, built and run as a kubelet runs the init container the webhook injects.

The pod is the golden case tests/webhook/cases/hf-basic, mutated by the webhook's own decision code
with this image and the local Hub: its init container runs under its securityContext as an arbitrary
UID, then its app container reads the model offline with only the env the webhook gave it. The
`modelcache` command runs from this image too (prefetch, refresh, verify --repair).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from devtools.hubserver import HubServer
from devtools.tinymodel import tiny_model_files
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.contract.keys import model_key
from modelcache.contract.sources import parse_source
from tests.images.conftest import SERVED
from tests.images.kubelet import FETCHER, ROOT, Completed, Kubelet, restricted
from tests.pod_security import openshift_restricted_v2_violations, restricted_violations
from webhook.config import Settings
from webhook.handlers import review_admission
from webhook.review import decode_patch

CASES = Path(__file__).resolve().parents[1] / "webhook" / "cases"
pytestmark = pytest.mark.usefixtures("images")

LOAD_OFFLINE = """
import hashlib, json, os, pathlib
from huggingface_hub import hf_hub_download, snapshot_download
repo = os.environ["REPO"]
snapshot = pathlib.Path(snapshot_download(repo))
by_repo_id = pathlib.Path(hf_hub_download(repo, "model.safetensors")).read_bytes()
by_path = (pathlib.Path(os.environ["MODEL_PATH"]) / "model.safetensors").read_bytes()
print(json.dumps({
    "files": sorted(p.name for p in snapshot.iterdir()),
    "by_repo_id": hashlib.sha256(by_repo_id).hexdigest(),
    "by_model_path": hashlib.sha256(by_path).hexdigest(),
}))
"""


def injected_pod(hub: HubServer, source: str | None = None) -> dict[str, Any]:
    """The golden hf-basic pod as the webhook mutates it for this image and the local Hub."""
    review = json.loads((CASES / "hf-basic" / "review.json").read_text())
    if source:
        review["request"]["object"]["metadata"]["annotations"]["modelcache.io/model"] = source
    settings = Settings(fetcher_image=FETCHER, hf_endpoint=hub.url)
    result = review_admission(json.dumps(review).encode(), settings=settings)
    assert result.status == 200
    assert result.body["response"]["allowed"], result.body
    mutated: dict[str, Any] = jsonpatch.apply_patch(review["request"]["object"], decode_patch(result.body))
    return mutated


def cache_volume(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)  # what `modelcache prepare` leaves, for any UID with group 0
    return cache


def app_container(pod: dict[str, Any]) -> None:
    """Turn the app container into a Python that loads the model: its env and mounts stay the webhook's."""
    (app,) = pod["spec"]["containers"]
    app["image"] = FETCHER  # has Python and huggingface_hub, as every serving image does
    app["command"] = ["python", "-c", LOAD_OFFLINE]
    app["args"] = []
    app["env"] = [*app["env"], {"name": "REPO", "value": SERVED}]


def test_the_injected_init_container_downloads_then_hits_and_the_app_loads_the_model_offline(
    hub: HubServer, tmp_path: Path
) -> None:
    cache = cache_volume(tmp_path)
    pod = injected_pod(hub)
    app_container(pod)
    first = Kubelet(pod, tmp_path / "pod-1", {"modelcache": cache})
    fetched = first.run("modelcache-fetch")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.termination_message.startswith("downloaded "), fetched.termination_message
    served = hub.bytes_served
    assert served > 0

    second = Kubelet(pod, tmp_path / "pod-2", {"modelcache": cache})
    hit = second.run("modelcache-fetch")
    assert hit.returncode == 0, hit.stderr
    assert hit.termination_message.startswith("cache hit: "), hit.termination_message
    assert hub.bytes_served == served  # no file byte from the origin again

    loaded = second.run("vllm", network="none")  # offline for real: no network at all
    assert loaded.returncode == 0, loaded.stderr
    answer = json.loads(loaded.stdout)
    expected = hashlib.sha256(tiny_model_files()["model.safetensors"]).hexdigest()
    assert answer["by_repo_id"] == answer["by_model_path"] == expected
    assert answer["files"] == sorted(tiny_model_files())


def test_the_fetcher_stops_within_2_s_of_sigterm_and_says_so(hub: HubServer, tmp_path: Path) -> None:
    """PID 1 in a container ignores a signal it has no handler for: the kubelet would wait out the grace."""
    hub.faults.bytes_per_second = 512 << 10  # 8 MiB in ~16 s: SIGTERM comes mid-file
    cache = cache_volume(tmp_path)
    kubelet = Kubelet(injected_pod(hub, "hf://tiny/big"), tmp_path / "pod", {"modelcache": cache})
    with kubelet.started("modelcache-fetch") as running:
        wait_until(lambda: any(p.stat().st_size > 0 for p in cache.rglob("*.part")), running.logs)
        # podman stop sends SIGTERM, then SIGKILL (exit 137) once the grace runs out: 2 s, plus 1 s for
        # podman's own round trip to the container's monitor.
        status, seconds = running.stop(grace=3)
        assert status == 143, f"exit {status} after {seconds:.1f} s\n{running.logs()}"
        assert "Stopped: stopped by SIGTERM" in running.message.read_text()
    assert [p for p in cache.rglob("*.part") if p.stat().st_size > 0]  # kept for the next pod


def wait_until(check: Callable[[], bool], logs: Callable[[], str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, logs()
        time.sleep(0.05)


def modelcache(cache: Path, hub: HubServer, *args: str) -> Completed:
    """The `modelcache` command from this image on a cache volume, as an operator's pod runs it."""
    return restricted(
        FETCHER,
        "--cache",
        "/cache",
        *args,
        extra=["-v", f"{cache}:/cache", "--env", f"HF_ENDPOINT={hub.url}", "--entrypoint", "modelcache"],
    )


def test_prefetch_verify_repair_and_refresh_run_from_the_fetcher_image(hub: HubServer, tmp_path: Path) -> None:
    cache = cache_volume(tmp_path)
    source = f"hf://{SERVED}"
    fetched = modelcache(cache, hub, "prefetch", source)
    assert fetched.returncode == 0, fetched.stderr
    (weights,) = {p.resolve() for p in cache.rglob("model.safetensors")}  # the blob the snapshot links to
    original = weights.read_bytes()
    weights.write_bytes(bytes(len(original)))  # the disk lost it: same size, other bytes

    found = modelcache(cache, hub, "verify", source)
    assert found.returncode != 0
    assert "model.safetensors" in found.stdout + found.stderr
    repaired = modelcache(cache, hub, "verify", "--repair", source)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert weights.read_bytes() == original
    assert modelcache(cache, hub, "verify", source).returncode == 0

    repo = hub.repos[SERVED]
    newer = repo.add_commit({**tiny_model_files(), "config.json": b'{"model_type": "tiny", "v": 2}'})
    refreshed = modelcache(cache, hub, "refresh", f"{source}@main")
    assert refreshed.returncode == 0, refreshed.stderr
    listed = modelcache(cache, hub, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert newer in listed.stdout


@pytest.mark.parametrize(
    ("command", "status"),
    [
        pytest.param(["purge"], 3, id="purge asks for live pods"),
        pytest.param(["ls", "--pods"], 3, id="ls --pods"),
        pytest.param(["agent"], 2, id="agent"),
    ],
)
def test_a_cluster_command_in_the_fetcher_image_names_the_image_that_runs_it(
    command: list[str], status: int, hub: HubServer, tmp_path: Path
) -> None:
    result = modelcache(cache_volume(tmp_path), hub, *command)
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "from the webhook image" in result.stderr


def test_prefetch_job_prints_a_job_that_runs_this_image(hub: HubServer, tmp_path: Path) -> None:
    result = modelcache(cache_volume(tmp_path), hub, "prefetch", f"hf://{SERVED}", "--job", "--image", FETCHER)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["kind"] == "Job"
    assert {c["image"] for c in job["spec"]["template"]["spec"]["containers"]} == {FETCHER}


def test_the_admin_pod_example_prefetches_into_the_cache_under_pod_security_restricted(
    hub: HubServer, tmp_path: Path
) -> None:
    """examples/admin/prefetch-pod.yaml as written, with this image and the local Hub as its mirror."""
    pod = yaml.safe_load((ROOT / "examples" / "admin" / "prefetch-pod.yaml").read_text())
    kubernetes_validate.validate(pod, "1.30.0", strict=True)
    (container,) = pod["spec"]["containers"]
    assert restricted_violations(pod, container) == []
    assert openshift_restricted_v2_violations(pod, container) == []
    container["image"] = FETCHER
    container["env"] = [{"name": "HF_ENDPOINT", "value": hub.url}]  # what a cluster without internet sets
    cache = cache_volume(tmp_path)
    result = Kubelet(pod, tmp_path / "pod", {"modelcache": cache}).run("prefetch")
    assert result.returncode == 0, result.stderr
    (uri,) = (arg for arg in container["args"] if arg.startswith("hf://"))
    assert check_ready(CacheLayout(cache), model_key(parse_source(uri))) is not None
