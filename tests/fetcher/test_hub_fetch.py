"""Fetching hf:// models from a local server that speaks the Hub's protocol, with the real fetcher process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from devtools.fetcher_env import fetcher_environment, run_fetcher
from devtools.hubserver import HubServer
from devtools.tinymodel import tiny_model_files
from modelcache.contract import keys, sources, wire
from tests.helpers import TOKEN

MODEL_SIZE = sum(len(b) for b in tiny_model_files().values())


def fetch(
    hub: HubServer, cache: Path, source: str = "hf://tiny/model", **extra: str
) -> subprocess.CompletedProcess[str]:
    include = tuple(p for p in extra.pop("include", "").split(",") if p)
    env = fetcher_environment(
        source, cache, include=include, extra={"HF_ENDPOINT": hub.url, "MODELCACHE_RETRY_BASE": "10ms", **extra}
    )
    return run_fetcher(env)


def termination_message(cache: Path) -> str:
    return (cache.parent / "pod-0.termination-log").read_text()


def offline_env(cache: Path) -> dict[str, str]:
    return {"HF_HUB_CACHE": str(cache / "hub"), "HF_HUB_OFFLINE": "1", "PATH": os.environ["PATH"]}


def test_a_fetched_model_is_a_valid_offline_hub_cache(hub: HubServer, cache: Path) -> None:
    result = fetch(hub, cache)
    assert result.returncode == 0, result.stderr
    repo = cache / "hub" / "models--tiny--model"
    commit = (repo / "refs" / "main").read_bytes()
    assert len(commit) == 40
    assert all(c in b"0123456789abcdef" for c in commit)  # no newline: huggingface_hub would not strip it
    assert not (repo / "trees").exists()
    snapshot = repo / "snapshots" / commit.decode()
    for link in snapshot.iterdir():
        assert link.is_symlink()
        assert not os.readlink(link).startswith("/")  # relative: survives mounting at another path
    # What an engine started with `--model tiny/model` does under HF_HUB_OFFLINE=1, in its own process.
    script = (
        "from huggingface_hub import snapshot_download, hf_hub_download;"
        "p = snapshot_download('tiny/model');"
        "q = snapshot_download('tiny/model', allow_patterns=['*.safetensors', '*.bin', '*.pt']);"
        "c = hf_hub_download('tiny/model', 'config.json');"
        "print(p); print(q); print(c)"
    )
    consumer = subprocess.run(
        [sys.executable, "-c", script], env=offline_env(cache), capture_output=True, text=True, check=False, timeout=60
    )
    assert consumer.returncode == 0, consumer.stderr
    assert consumer.stdout.splitlines()[0] == str(snapshot)
    weights = load_file(snapshot / "model.safetensors")
    assert weights["embed.weight"].shape == (10, 64)
    assert Tokenizer.from_file(str(snapshot / "tokenizer.json")).encode("hello world").ids == [2, 3]
    model_path = Path(wire.model_path(str(cache), keys.model_key(sources.parse_source("hf://tiny/model"))))
    assert model_path.resolve() == snapshot.resolve()
    assert "downloaded" in termination_message(cache)


def test_published_files_are_readable_by_any_uid(hub: HubServer, cache: Path) -> None:
    assert fetch(hub, cache).returncode == 0
    for directory, _, files in os.walk(cache / "hub"):
        assert stat.S_IMODE(os.stat(directory).st_mode) & 0o055 == 0o055, directory
        for name in files:
            mode = stat.S_IMODE(os.stat(Path(directory) / name).st_mode)
            assert mode & 0o044 == 0o044, (directory, name, oct(mode))
    for name in os.listdir(cache / ".modelcache" / "markers"):
        assert stat.S_IMODE((cache / ".modelcache" / "markers" / name).stat().st_mode) & 0o044 == 0o044


def test_the_hit_path_makes_no_request_and_imports_no_network_library(hub: HubServer, cache: Path) -> None:
    assert fetch(hub, cache).returncode == 0
    hub.reset_counters()
    env = fetcher_environment("hf://tiny/model", cache, extra={"HF_ENDPOINT": hub.url})
    probe = (
        "import sys, runpy\n"
        "try:\n    runpy.run_module('fetcher', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "libraries = ('huggingface_hub', 'boto3', 'botocore', 'aiohttp', 'urllib3', 'httpx2')\n"
        "heavy = sorted(m for m in libraries if m in sys.modules)\n"
        "print('exit', code, 'heavy', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert "exit 0 heavy []" in result.stdout, result.stdout + result.stderr
    assert hub.requests == []
    assert "cache hit" in termination_message(cache)
    usage = cache / ".modelcache" / "usage"
    assert len(list(usage.iterdir())) == 1


def test_include_patterns_fetch_only_matching_files(hub: HubServer, cache: Path) -> None:
    result = fetch(hub, cache, include="*.safetensors,config.json")
    assert result.returncode == 0, result.stderr
    snapshot = next((cache / "hub" / "models--tiny--model" / "snapshots").iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]
    # vLLM's offline pattern still works: no trees/ listing claims files that are not here.
    script = (
        "from huggingface_hub import snapshot_download;"
        "print(snapshot_download('tiny/model', allow_patterns=['*.safetensors', '*.bin', '*.pt']))"
    )
    consumer = subprocess.run(
        [sys.executable, "-c", script], env=offline_env(cache), capture_output=True, text=True, check=False, timeout=60
    )
    assert consumer.returncode == 0, consumer.stderr


def test_a_second_include_set_adds_to_the_same_snapshot_without_downloading_twice(hub: HubServer, cache: Path) -> None:
    assert fetch(hub, cache, include="*.json").returncode == 0
    json_bytes = hub.bytes_served
    assert fetch(hub, cache).returncode == 0  # all files: only the non-JSON ones are new
    assert hub.bytes_served - json_bytes == MODEL_SIZE - sum(
        len(b) for p, b in tiny_model_files().items() if p.endswith(".json")
    )
    snapshots = list((cache / "hub" / "models--tiny--model" / "snapshots").iterdir())
    assert len(snapshots) == 1
    assert len(list(snapshots[0].iterdir())) == len(tiny_model_files())


def test_no_matching_file_is_a_clear_error(hub: HubServer, cache: Path) -> None:
    result = fetch(hub, cache, include="*.gguf")
    assert result.returncode == 3
    message = termination_message(cache)
    assert "no file of hf://tiny/model" in message
    assert "config.json" in message  # says what the repository has
    assert not (cache / ".modelcache" / "markers").exists() or not list((cache / ".modelcache" / "markers").iterdir())


@pytest.mark.parametrize(
    ("source", "extra", "code", "fragment"),
    [
        pytest.param("hf://tiny/nope", {}, 3, "put a Hub token in", id="unknown-repo"),
        pytest.param("hf://tiny/model@v9", {}, 3, "revision 'v9' of tiny/model does not exist", id="unknown-revision"),
        pytest.param("hf://tiny/gated", {}, 4, "is gated", id="gated-without-token"),
        pytest.param(
            "hf://tiny/gated",
            {"HF_TOKEN": "wrong", "MODELCACHE_SECRET_NAME": "hf-token"},
            4,
            "the Secret 'hf-token', key HF_TOKEN",
            id="gated-wrong-token",
        ),
        pytest.param("hf://tiny/private", {}, 3, "If it is private or gated", id="private-without-token"),
    ],
)
def test_hub_errors_say_what_to_do(
    hub: HubServer, cache: Path, source: str, extra: dict[str, str], code: int, fragment: str
) -> None:
    result = fetch(hub, cache, source, **extra)
    assert result.returncode == code, result.stderr
    assert fragment in termination_message(cache)
    assert "wrong" not in termination_message(cache)  # a token is never echoed


def test_a_token_reaches_the_hub_but_never_the_cdn(hub: HubServer, cache: Path) -> None:
    result = fetch(hub, cache, "hf://tiny/gated", HF_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    cdn = [r for r in hub.requests if r[1].startswith("/cdn/")]
    assert cdn
    assert not any(had_auth for _, _, had_auth in cdn)
    assert TOKEN not in result.stderr


def test_rate_limits_and_server_errors_are_retried_honouring_retry_after(hub: HubServer, cache: Path) -> None:
    hub.faults.next_statuses = [429, 503, 429]
    hub.faults.retry_after = 0
    result = fetch(hub, cache)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("retrying") == 3


def test_retries_run_out_with_a_clear_error(hub: HubServer, cache: Path) -> None:
    hub.faults.next_statuses = [503] * 100  # more than every file x every attempt
    hub.faults.retry_after = 0
    result = fetch(hub, cache, MODELCACHE_RETRIES="3")
    assert result.returncode == 8
    assert "failed 3 times" in termination_message(cache)


@pytest.mark.parametrize("fault", ["corrupt", "wrong_digest"])
def test_corrupt_data_is_never_published(hub: HubServer, cache: Path, fault: str) -> None:
    getattr(hub.faults, fault).add("model.safetensors")
    result = fetch(hub, cache, MODELCACHE_RETRIES="1")
    assert result.returncode == 5, result.stderr
    assert "failed verification" in termination_message(cache)
    assert not list((cache / ".modelcache" / "markers").iterdir())
    assert not list((cache / "ready").iterdir())
    assert not (cache / "hub" / "models--tiny--model" / "snapshots").exists()


def test_a_small_file_is_checked_against_its_git_blob_id(hub: HubServer, cache: Path) -> None:
    hub.faults.wrong_digest.add("config.json")
    result = fetch(hub, cache)
    assert result.returncode == 5
    assert "git blob sha1" in termination_message(cache)


def test_the_resolved_commit_is_reused_until_a_refresh(hub: HubServer, cache: Path) -> None:
    assert fetch(hub, cache).returncode == 0
    repo = hub.repos["tiny/model"]
    first = repo.main
    second = repo.add_commit({**tiny_model_files(), "config.json": b'{"model_type": "tiny", "v": 2}'})
    # Another workload asks for main with other include patterns: it reads the commit the cache has.
    assert fetch(hub, cache, include="*.json").returncode == 0
    refs = cache / "hub" / "models--tiny--model" / "refs" / "main"
    assert refs.read_text() == first
    ready = cache / "ready"
    # An explicit refresh re-resolves, publishes the new commit, and leaves the old snapshot for running pods.
    assert fetch(hub, cache, MODELCACHE_REFRESH="true").returncode == 0
    assert refs.read_text() == second
    snapshots = {p.name for p in (cache / "hub" / "models--tiny--model" / "snapshots").iterdir()}
    assert snapshots == {first, second}
    key = keys.model_key(sources.parse_source("hf://tiny/model"))
    assert os.readlink(ready / key).endswith(second)
    marker = json.loads((cache / ".modelcache" / "markers" / f"{key}.json").read_text())
    assert marker["version"] == second


def test_a_pinned_commit_needs_no_revision_lookup(hub: HubServer, cache: Path) -> None:
    commit = hub.repos["tiny/model"].main
    result = fetch(hub, cache, f"hf://tiny/model@{commit}")
    assert result.returncode == 0, result.stderr
    assert not any("/revision/" in path for _, path, _ in hub.requests)
    assert not (cache / "hub" / "models--tiny--model" / "refs" / commit).exists()


def test_a_broken_model_directory_is_fetched_again(hub: HubServer, cache: Path) -> None:
    assert fetch(hub, cache).returncode == 0
    snapshot = next((cache / "hub" / "models--tiny--model" / "snapshots").iterdir())
    blob = (snapshot / "model.safetensors").resolve()
    blob.unlink()
    result = fetch(hub, cache)
    assert result.returncode == 0, result.stderr
    assert "not complete" in result.stderr
    assert (snapshot / "model.safetensors").stat().st_size > 0


def test_an_invalid_environment_exits_2_with_every_problem(cache: Path) -> None:
    env = fetcher_environment("hf://tiny/model", cache)
    env[wire.MODEL_KEY_ENV] = "hf_other_model_main_0123456789abcdef"
    env["MODELCACHE_WORKERS"] = "zero"
    result = run_fetcher(env)
    assert result.returncode == 2
    message = termination_message(cache)
    assert "is not the key of hf://tiny/model@main" in message
    assert "MODELCACHE_WORKERS='zero'" in message


def test_a_connection_dropped_mid_file_resumes_from_where_it_broke(hub: HubServer, cache: Path) -> None:
    hub.faults.cut_next_after = 1 << 20  # the 4 MiB file breaks off after 1 MiB
    result = fetch(hub, cache, "hf://tiny/big", MODELCACHE_WORKERS="1")
    assert result.returncode == 0, result.stderr
    assert "retrying in" in result.stderr
    assert "from byte 1048576" in result.stderr
    repo = hub.repos["tiny/big"]
    model_bytes = sum(item.size for item in repo.commits[repo.main].values())
    assert hub.bytes_served == model_bytes  # the first MiB was not sent again


def test_an_opted_out_pod_says_its_model_is_pod_local(hub: HubServer, cache: Path) -> None:
    result = fetch(hub, cache, MODELCACHE_SHARED_CACHE="false")
    assert result.returncode == 0, result.stderr
    assert "pod-local storage" in termination_message(cache)


def test_a_running_pod_keeps_its_version_when_the_model_is_refreshed(
    hub: HubServer, cache: Path, tmp_path: Path
) -> None:
    """MODEL_PATH is the pod's pin, a link to the version its fetcher got: a refresh moves the cache's
    ready/ link and refs/main for new pods, never what a running pod reads, even if it opens files late."""

    def pod(name: str, **extra: str) -> Path:
        pin = tmp_path / name / "model"  # the pod's modelcache-pin emptyDir
        pin.parent.mkdir()
        env = fetcher_environment(
            "hf://tiny/model",
            cache,
            pod=name,
            extra={"HF_ENDPOINT": hub.url, wire.PIN_PATH_ENV: str(pin), **extra},
        )
        result = run_fetcher(env)
        assert result.returncode == 0, result.stderr
        return pin

    before = pod("llm-0")
    first = (before / "config.json").read_bytes()
    assert os.readlink(before).startswith(str(cache / "hub" / "models--tiny--model" / "snapshots") + "/")
    new_commit = hub.repos["tiny/model"].add_commit({"config.json": b'{"v": 2}'})
    pod("refresher", **{wire.REFRESH_ENV: "true"})
    after = pod("llm-1")

    assert (before / "config.json").read_bytes() == first  # the running pod still reads its version
    assert (after / "config.json").read_bytes() == b'{"v": 2}'  # a pod started afterwards gets the new one
    assert os.readlink(after).endswith(new_commit)
    key = keys.model_key(sources.parse_source("hf://tiny/model"))
    assert (Path(wire.model_path(str(cache), key)) / "config.json").read_bytes() == b'{"v": 2}'


def test_a_pin_path_inside_the_cache_is_refused(cache: Path) -> None:
    env = fetcher_environment("hf://tiny/model", cache, extra={wire.PIN_PATH_ENV: str(cache / "ready" / "x")})
    result = run_fetcher(env)
    assert result.returncode == 2
    assert f"{wire.PIN_PATH_ENV}={str(cache / 'ready' / 'x')!r} is not an absolute path outside the cache" in (
        result.stderr
    )


def _staged_files(cache: Path) -> list[Path]:
    return [p for p in (cache / ".modelcache" / "staging").rglob("*") if p.is_file()]


def test_a_listing_with_a_file_inside_a_file_is_refused_before_anything_is_staged(cache: Path) -> None:
    from devtools.hubserver import HubRepo

    with HubServer([HubRepo.single("odd/tree", {"config.json": b"{}", "sub": b"a", "sub/inner": b"b"})]) as odd:
        result = fetch(odd, cache, "hf://odd/tree")
    assert result.returncode == 5, result.stderr
    message = termination_message(cache)
    assert "IntegrityError" in message
    assert "lists both a file 'sub' and a file 'sub/inner' inside it" in message
    assert "nothing was downloaded" in message
    assert _staged_files(cache) == []
    assert not (cache / "hub" / "models--odd--tree" / "snapshots").exists()


def test_a_listing_that_names_a_file_twice_is_refused_naming_it(hub: HubServer, cache: Path) -> None:
    hub.faults.listed_twice = {"config.json"}
    result = fetch(hub, cache)
    assert result.returncode == 5, result.stderr
    assert "lists 'config.json' twice" in termination_message(cache)
    assert _staged_files(cache) == []
