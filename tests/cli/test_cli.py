"""`modelcache` commands in their own process, on a cache the real fetcher populated from the local Hub."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import kubernetes_validate
import pytest

from devtools.admission import pod_from_manifest
from devtools.fetcher_env import fetcher_environment, start_fetcher
from devtools.hubserver import HubServer
from devtools.kubeapi import KubeApi
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import read_marker
from modelcache.cache.outcomes import read_outcomes
from modelcache.cli import progress
from modelcache.contract import keys, sources, wire
from modelcache.contract.prefetch import prefetch_job
from tests.helpers import age_use, modelcache, populate, start_model_pod, write_kubeconfig
from webhook.config import Settings
from webhook.injection import decide

TINY = keys.model_key(sources.parse_source("hf://tiny/model"))
BIG = keys.model_key(sources.parse_source("hf://tiny/big"))
DAY = 86400


def ls_json(cache: Path, **env: str) -> dict[str, dict[str, object]]:
    result = modelcache(cache, "ls", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {m["key"]: m for m in json.loads(result.stdout)["models"]}


def test_ls_lists_every_model_with_source_state_size_version_and_last_use(hub: HubServer, cache: Path) -> None:
    populate(hub, cache)
    populate(hub, cache, "hf://tiny/big")
    table = modelcache(cache, "ls")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SOURCE", "STATE", "SIZE", "LAST", "USED", "VERSION", "KEY", "CACHEDMODEL"]
    assert any(line.startswith("hf://tiny/big@main") and " ready " in line and "4.0 MiB" in line for line in lines)
    big_line = next(line for line in lines if line.startswith("hf://tiny/big@main"))
    assert big_line.split()[-2:] == [BIG, BIG.replace("_", "-").replace(".", "-")]  # `kubectl get cachedmodel <it>`
    assert "2 model(s)" in lines[-1]
    models = ls_json(cache)
    assert set(models) == {TINY, BIG}
    big = models[BIG]
    assert big["state"] == "ready"
    assert big["cachedmodel"] == big_line.split()[-1]
    assert big["version"] == hub.repos["tiny/big"].main
    assert big["size"] == sum(f.size for f in hub.repos["tiny/big"].commits[hub.repos["tiny/big"].main].values())
    assert time.time() - float(big["last_used"]) < 60  # type: ignore[arg-type]
    outcome = big["last_outcome"]
    assert isinstance(outcome, dict)
    assert outcome["kind"] == "downloaded"
    assert outcome["bytes_downloaded"] == big["size"]
    assert outcome["pod"] == "pod-0"


def test_ls_shows_a_download_in_progress_with_its_holder_and_an_interrupted_one(
    hub: HubServer, cache: Path, tmp_path: Path
) -> None:
    hub.faults.bytes_per_second = 512 << 10  # the 4 MiB model takes ~8 s
    env = fetcher_environment(
        "hf://tiny/big", cache, pod="llm-1", extra={"HF_ENDPOINT": hub.url, "MODELCACHE_HEARTBEAT": "100ms"}
    )
    fetcher = start_fetcher(env, log=tmp_path / "fetcher.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            model = ls_json(cache).get(BIG, {})
            download = model.get("download")
            if isinstance(download, dict) and download["bytes_done"] > 0:
                break
            assert time.monotonic() < deadline, (tmp_path / "fetcher.log").read_text()
            time.sleep(0.2)
        assert model["state"] == "downloading"
        assert model["source"] == "hf://tiny/big@main"
        assert download["holder"].startswith("pod serving/llm-1 on node node-a")
        assert 0 < download["bytes_done"] < download["bytes_total"]
        table = modelcache(cache, "ls").stdout
        assert "downloading" in table
        assert "% (pod serving/llm-1 on node node-a" in table
    finally:
        os.kill(fetcher.pid, signal.SIGKILL)
        fetcher.wait()
    model = ls_json(cache)[BIG]
    assert model["state"] == "interrupted"
    assert model["source"] == "hf://tiny/big@main"  # named by the dead holder's owner record
    assert int(model["staging_bytes"]) > 0  # type: ignore[call-overload]
    assert "interrupted (" in modelcache(cache, "ls").stdout


def test_verify_finds_a_damaged_file_and_repair_fetches_it_again(hub: HubServer, cache: Path) -> None:
    populate(hub, cache, "hf://tiny/big")
    weights = Path(wire.model_path(str(cache), BIG)) / "weights.bin"
    original = weights.read_bytes()
    damaged = bytearray(original)
    damaged[1000] ^= 0xFF  # same size: only a digest finds it
    blob = weights.resolve()
    blob.chmod(0o644)
    blob.write_bytes(bytes(damaged))
    assert modelcache(cache, "ls").stdout.count(" ready ") == 1  # sizes are right: the hit path cannot tell

    found = modelcache(cache, "verify")
    assert found.returncode == 1
    assert f"CORRUPT   {BIG}" in found.stdout
    assert "weights.bin: sha256 " in found.stdout

    repaired = modelcache(cache, "verify", "hf://tiny/big", "--repair", env={"HF_ENDPOINT": hub.url})
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"repaired  {BIG}" in repaired.stdout
    assert weights.read_bytes() == original
    assert modelcache(cache, "verify").stdout.strip() == f"ok        {BIG}"


def test_a_repair_never_leaves_a_reader_without_the_file_nor_the_model_unready(hub: HubServer, cache: Path) -> None:
    populate(hub, cache, "hf://tiny/big")
    weights = Path(wire.model_path(str(cache), BIG)) / "weights.bin"
    original = weights.read_bytes()
    blob = weights.resolve()
    blob.chmod(0o644)
    blob.write_bytes(bytes(b ^ 0xFF for b in original[:16]) + original[16:])
    hub.faults.bytes_per_second = 1 << 20  # 4 MiB in ~4 s: a long repair window to look into
    repair = subprocess.Popen(
        [sys.executable, "-m", "modelcache", "--cache", str(cache), "verify", "hf://tiny/big", "--repair"],
        env={**os.environ, "HF_ENDPOINT": hub.url, "KUBECONFIG": "/nonexistent"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    looks = missing = unready = 0
    while repair.poll() is None:
        looks += 1
        try:
            with weights.open("rb") as reader:  # what a serving pod does through its MODEL_PATH
                reader.read(16)
        except FileNotFoundError:
            missing += 1
        unready += read_marker(CacheLayout(cache), BIG) is None
        time.sleep(0.005)
    output = repair.communicate()[0]
    assert repair.returncode == 0, output
    assert looks > 100  # the repair took long enough to be watched
    assert (missing, unready) == (0, 0)
    assert weights.read_bytes() == original
    assert "repaired 1 file(s), 4.0 MiB, of version" in output
    log_lines = [line for line in output.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert any("replaced weights.bin" in line for line in log_lines)
    assert all(f"[{BIG}]" in line for line in log_lines), output  # every line names the model
    assert modelcache(cache, "verify").stdout.strip() == f"ok        {BIG}"
    assert not [p for p in (cache / ".modelcache" / "staging").rglob("*") if p.is_file()]


def test_a_repair_of_an_s3_model_replaces_the_file_in_its_version_directory(moto: str, cache: Path) -> None:
    from tests.helpers import aws_env, s3_client

    s3 = s3_client(moto)
    s3.create_bucket(Bucket="repair")
    s3.put_object(Bucket="repair", Key="m/config.json", Body=b'{"a": 1}', ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket="repair", Key="m/weights.bin", Body=os.urandom(1 << 20), ChecksumAlgorithm="SHA256")
    warmed = modelcache(cache, "prefetch", "s3://repair/m", env=aws_env(moto))
    assert warmed.returncode == 0, warmed.stderr
    config = Path(wire.model_path(str(cache), keys.model_key(sources.parse_source("s3://repair/m")))) / "config.json"
    config.write_bytes(b'{"a": 2}')
    repaired = modelcache(cache, "verify", "s3://repair/m", "--repair", env=aws_env(moto))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert config.read_bytes() == b'{"a": 1}'
    s3.put_object(Bucket="repair", Key="m/config.json", Body=b'{"a": 3}', ChecksumAlgorithm="SHA256")
    config.write_bytes(b'{"a": 2}')
    refused = modelcache(cache, "verify", "s3://repair/m", "--repair", env=aws_env(moto))
    assert refused.returncode == 1
    assert "which the source no longer serves: a repair would mix two versions" in refused.stdout
    assert "`modelcache refresh` fetches the new version whole" in refused.stdout


def test_prefetch_warms_the_cache_so_that_pods_hit(hub: HubServer, cache: Path) -> None:
    warmed = modelcache(cache, "prefetch", "hf://tiny/model", env={"HF_ENDPOINT": hub.url})
    assert warmed.returncode == 0, warmed.stderr
    assert warmed.stdout.startswith("downloaded ")
    hub.reset_counters()
    pod = populate(hub, cache)
    assert "cache hit" in pod.stderr
    assert hub.requests == []


def test_prefetch_reports_a_missing_model_with_the_fetchers_exit_code(hub: HubServer, cache: Path) -> None:
    result = modelcache(cache, "prefetch", "hf://tiny/absent", env={"HF_ENDPOINT": hub.url, "MODELCACHE_RETRIES": "1"})
    assert result.returncode == 3
    assert "NotFound" in result.stderr
    assert "tiny/absent" in result.stderr
    [(_, record)] = list(read_outcomes(CacheLayout(cache)))
    assert (record.kind, record.reason) == ("failed", "NotFound")


def test_refresh_moves_to_the_newest_commit_and_keeps_the_old_snapshot_whole(hub: HubServer, cache: Path) -> None:
    populate(hub, cache)
    old = read_marker(CacheLayout(cache), TINY)
    assert old is not None
    new_commit = hub.repos["tiny/model"].add_commit({"config.json": b'{"v": 2}', "model.safetensors": b"x" * 4096})
    again = modelcache(cache, "prefetch", "hf://tiny/model", env={"HF_ENDPOINT": hub.url})
    assert old.version in again.stdout  # a prefetch never drifts: pods get the commit the cache resolved
    refreshed = modelcache(cache, "refresh", "hf://tiny/model", env={"HF_ENDPOINT": hub.url})
    assert refreshed.returncode == 0, refreshed.stderr
    assert new_commit in refreshed.stdout
    assert ls_json(cache)[TINY]["version"] == new_commit
    old_dir = cache / old.path
    for item in old.files:  # a pod started before the refresh still reads every file of its snapshot
        assert (old_dir / item.path).stat().st_size == item.size


def test_rm_refuses_while_the_model_is_locked_then_removes_it(hub: HubServer, cache: Path) -> None:
    populate(hub, cache)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cache), TINY], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        refused = modelcache(cache, "rm", "hf://tiny/model", "--no-pod-check")
        assert refused.returncode == 1
        assert "is locked" in refused.stdout
        assert ls_json(cache)[TINY]["state"] == "ready"
    finally:
        holder.kill()
        holder.wait()
    removed = modelcache(cache, "rm", "hf://tiny/model", "--no-pod-check")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert removed.stdout.startswith(f"removed {TINY}: 35.")
    assert ls_json(cache) == {}
    assert not (cache / "hub" / "models--tiny--model").exists()
    assert not Path(wire.model_path(str(cache), TINY)).exists()
    assert "removed by modelcache rm" in removed.stderr
    assert f"[{TINY}]" in removed.stderr


HOLD_LOCK = """
import sys, time
from pathlib import Path
from modelcache.cache.patience import LockSettings
from modelcache.cache.layout import CacheLayout
from modelcache.cache.owners import Identity
from modelcache.cache.locking import ModelLock
lock = ModelLock(CacheLayout(Path(sys.argv[1])), sys.argv[2], settings=LockSettings(),
                 identity=Identity.here(pod="llm-9", namespace="serving", node="node-b"))
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_model_a_live_pod_uses_is_neither_removed_nor_purged(hub: HubServer, cache: Path, tmp_path: Path) -> None:
    populate(hub, cache)
    age_use(cache, TINY, 30)
    with KubeApi(token="admin") as api:
        kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", api.url, "admin"))
        start_model_pod(api, TINY)
        rm = modelcache(cache, "rm", "hf://tiny/model", env={"KUBECONFIG": kubeconfig})
        assert rm.returncode == 1
        assert "in use by serving/llm-0" in rm.stdout
        purge = modelcache(cache, "purge", "--unused-for", "1d", env={"KUBECONFIG": kubeconfig})
        assert purge.returncode == 0, purge.stderr
        assert "keep         hf://tiny/model@main: in use by 1 live pod(s): serving/llm-0" in purge.stdout
        assert ls_json(cache)[TINY]["state"] == "ready"
        listed = modelcache(cache, "ls", "--pods", env={"KUBECONFIG": kubeconfig})
        assert "serving/llm-0" in listed.stdout

        api.set_status("Pod", "llm-0", {"phase": "Succeeded"}, namespace="serving")  # finished pods do not count
        purge = modelcache(cache, "purge", "--unused-for", "1d", env={"KUBECONFIG": kubeconfig})
        assert "removed      hf://tiny/model@main: unused for 4w 2d (purge after 1d)" in purge.stdout
    assert ls_json(cache) == {}


def test_the_snapshot_a_running_pod_started_with_outlives_a_refresh_until_the_pod_is_gone(
    hub: HubServer, cache: Path, tmp_path: Path
) -> None:
    populate(hub, cache)
    old = read_marker(CacheLayout(cache), TINY)
    assert old is not None
    hub.repos["tiny/model"].add_commit({"config.json": b'{"v": 2}'})
    assert modelcache(cache, "refresh", "hf://tiny/model", env={"HF_ENDPOINT": hub.url}).returncode == 0
    with KubeApi(token="admin") as api:
        kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", api.url, "admin"))
        start_model_pod(api, TINY)  # started before the refresh: it reads the old snapshot
        purge = modelcache(cache, "purge", env={"KUBECONFIG": kubeconfig})
        assert purge.returncode == 0, purge.stderr
        assert (cache / old.path / "model.safetensors").stat().st_size > 0
        api.set_status("Pod", "llm-0", {"phase": "Succeeded"}, namespace="serving")
        purge = modelcache(cache, "purge", env={"KUBECONFIG": kubeconfig})
        assert f"removed      {old.path}: snapshot no ready marker and no live pod refers to" in purge.stdout
    assert not (cache / old.path).exists()
    assert ls_json(cache)[TINY]["state"] == "ready"  # the refreshed model stays


@pytest.mark.parametrize(
    "command", [("purge",), ("rm", "hf://tiny/model"), ("ls", "--pods")], ids=lambda c: " ".join(c)
)
def test_an_api_outage_is_its_own_exit_code_and_removes_nothing(
    hub: HubServer, cache: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    populate(hub, cache)
    age_use(cache, TINY, 30)
    with socket.socket() as closed:  # a port nothing listens on: the apiserver is down
        closed.bind(("127.0.0.1", 0))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{closed.getsockname()[1]}", "x")
    result = modelcache(cache, *command, env={"KUBECONFIG": str(kubeconfig)})
    assert result.returncode == 3, result.stderr  # not 2: the command was right, the cluster did not answer
    assert "cannot list pods through the Kubernetes API" in result.stderr
    assert "--no-pod-check" in result.stderr
    assert ls_json(cache)[TINY]["state"] == "ready"


def test_purge_removes_what_is_unused_past_the_ttl_and_dead_leftovers_and_nothing_else(
    hub: HubServer, cache: Path
) -> None:
    populate(hub, cache)
    populate(hub, cache, "hf://tiny/big")
    age_use(cache, BIG, 8)
    layout = CacheLayout(cache)
    dead_key = "s3_bucket_prefix_0123456789abcdef"
    dead = layout.staging_dir(dead_key) / "v1.0123456789ab"  # a fetcher killed long ago
    (dead / "data").mkdir(parents=True)
    (dead / "data" / "part.bin").write_bytes(b"x" * 1000)
    for path in (dead, dead.parent):
        os.utime(path, (time.time() - 2 * DAY, time.time() - 2 * DAY))

    dry = modelcache(cache, "purge", "--no-pod-check", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove hf://tiny/big@main: unused for 1w 1d (purge after 1w)" in dry.stdout
    assert "keep         hf://tiny/model@main: used " in dry.stdout
    assert "would remove .modelcache/staging/s3_bucket_prefix_0123456789abcdef" in dry.stdout
    assert set(ls_json(cache)) == {TINY, BIG, dead_key}
    assert dead.exists()

    done = modelcache(cache, "purge", "--no-pod-check", "--json")
    report = json.loads(done.stdout)
    removed = {m["key"] for m in report["models"] if m["remove"]}
    assert removed == {BIG}
    assert report["freed_bytes"] >= 4 << 20
    assert set(ls_json(cache)) == {TINY}
    assert not (cache / "hub" / "models--tiny--big").exists()
    assert not dead.exists()
    check = subprocess.run(  # the model that stays still loads offline, as an engine would
        [sys.executable, "-c", "from huggingface_hub import snapshot_download; print(snapshot_download('tiny/model'))"],
        env={"HF_HUB_CACHE": str(cache / "hub"), "HF_HUB_OFFLINE": "1", "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "removed" in done.stderr
    assert f"[{BIG}]" in done.stderr


def test_purge_logs_as_json_lines_with_the_model_key(hub: HubServer, cache: Path) -> None:
    populate(hub, cache)
    age_use(cache, TINY, 30)
    result = modelcache(cache, "--log-format", "json", "purge", "--no-pod-check", "--unused-for", "1d")
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    removal = [line for line in lines if line["message"].startswith(f"removed {TINY}")]
    assert removal
    assert removal[0]["model_key"] == TINY
    assert "unused for 4w 2d (purge after 1d)" in removal[0]["message"]


def test_every_line_about_a_model_names_its_key_in_both_formats(hub: HubServer, cache: Path) -> None:
    populate(hub, cache)
    hub.repos["tiny/model"].add_commit({"config.json": b'{"v": 2}', "model.safetensors": b"y" * 4096})
    refreshed = modelcache(cache, "refresh", "hf://tiny/model", env={"HF_ENDPOINT": hub.url})
    assert refreshed.returncode == 0, refreshed.stderr
    # The old snapshot and its blobs are a repository's leftovers: no model's lock guards them, yet they
    # are that model's, and the log says so.
    dry = json.loads(modelcache(cache, "purge", "--no-pod-check", "--dry-run", "--json").stdout)
    assert {item["model_key"] for item in dry["leftovers"]} == {TINY}  # the plan says whose they are too
    result = modelcache(cache, "--log-format", "json", "purge", "--no-pod-check")
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    removed = [line for line in lines if line["message"].startswith("removed ")]
    assert any(line["message"].startswith("removed hub/models--tiny--model/snapshots/") for line in removed)
    assert {line["model_key"] for line in removed} == {TINY}
    text = modelcache(cache, "rm", "hf://tiny/model", "--no-pod-check")
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stderr
    assert all(f"[{TINY}]" in line for line in text.stderr.splitlines()), text.stderr


def test_bad_arguments_name_the_value_and_what_is_expected(cache: Path) -> None:
    for args, expected in (
        (("purge", "--unused-for", "7"), "--unused-for '7': '7' has no unit: write 7s, 7m, 7h, 7d or 7w"),
        (("purge", "--min-free", "lots"), "--min-free 'lots': expected a Kubernetes quantity such as 500m, 2, 8Gi"),
        (("rm", "llama"), "'llama' is neither a model URI"),
        (("prefetch", "hf://../x"), "annotation modelcache.io/model="),
    ):
        result = modelcache(cache, *args)
        assert result.returncode == 2, args
        assert expected in result.stderr, result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "modelcache", "ls"],
        env={k: v for k, v in os.environ.items() if k != wire.CACHE_ROOT_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "pass --cache DIR or set MODELCACHE_CACHE_ROOT" in missing.stderr


@pytest.mark.parametrize("command", ["prefetch", "refresh"])
def test_a_prefetch_job_is_a_valid_job_that_the_webhook_gives_the_model(command: str, cache: Path) -> None:
    result = modelcache(cache, command, "hf://tiny/model@main", "--job", "--namespace", "serving", "--secret", "hf")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    for version in ("1.30.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(job, version, strict=True)
    pod, namespace = pod_from_manifest(job)
    decision = decide({**pod, "metadata": {**pod["metadata"], "namespace": namespace}}, settings=Settings())
    assert decision.outcome == "injected"
    [init] = next(op["value"] for op in decision.patch if op["path"] == "/spec/initContainers")
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env[wire.SOURCE_ENV] == "hf://tiny/model@main"
    assert env.get(wire.REFRESH_ENV) == ("true" if command == "refresh" else None)
    assert env[wire.SECRET_NAME_ENV] == "hf"


def test_prefetch_apply_creates_the_job_once(cache: Path, tmp_path: Path) -> None:
    with KubeApi(token="admin") as api:
        kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", api.url, "admin"))
        args = ("prefetch", "hf://tiny/model", "--apply", "--namespace", "serving")
        first = modelcache(cache, *args, env={"KUBECONFIG": kubeconfig})
        assert first.returncode == 0, first.stderr
        assert "created: `kubectl -n serving logs -f job/modelcache-prefetch-" in first.stdout
        second = modelcache(cache, *args, env={"KUBECONFIG": kubeconfig})
        assert "exists already" in second.stdout
        assert [r for r in api.requests if r[0] == "POST"] == [("POST", "/apis/batch/v1/namespaces/serving/jobs")] * 2


def test_prefetch_declare_creates_a_cachedmodel_that_the_agents_and_the_controller_meet(
    cache: Path, tmp_path: Path
) -> None:
    from modelcache.contract import cachedmodel

    printed = modelcache(cache, "prefetch", "hf://tiny/model", "--declare", "--namespace", "serving", "--secret", "hf")
    assert printed.returncode == 0, printed.stderr
    obj = json.loads(printed.stdout)
    assert obj["metadata"]["name"] == cachedmodel.name_for_key(TINY)  # the name the agents would give it
    assert obj["spec"] == {"source": "hf://tiny/model@main", "include": [], "namespaces": ["serving"], "secret": "hf"}
    with KubeApi(token="admin") as api:
        kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", api.url, "admin"))
        args = ("prefetch", "hf://tiny/model", "--declare", "--apply", "--namespace", "serving")
        first = modelcache(cache, *args, env={"KUBECONFIG": kubeconfig})
        assert first.returncode == 0, first.stderr
        assert f"kubectl wait --for=condition=Ready cachedmodel/{cachedmodel.name_for_key(TINY)}" in first.stdout
        stored = api.get("CachedModel", cachedmodel.name_for_key(TINY))
        assert stored is not None  # the stand-in checked it against the CRD's schema
        assert cachedmodel.key_of(stored) == TINY
        assert "exists already" in modelcache(cache, *args, env={"KUBECONFIG": kubeconfig}).stdout
    refused = modelcache(cache, "refresh", "hf://tiny/model", "--declare")
    assert refused.returncode != 0
    assert "refresh --job" in refused.stderr


def test_progress_is_plain_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)
    stream = StringIO()
    with progress.Meter("verify hf://tiny/big", 4 << 20, stream=stream) as meter:
        meter.add(1 << 20)
        meter.add(1 << 20)
    assert stream.getvalue().splitlines() == [
        "verify hf://tiny/big: 1.0 MiB of 4.0 MiB (25 %)",
        "verify hf://tiny/big: 2.0 MiB of 4.0 MiB (50 %)",
    ]


def test_the_job_names_stay_within_kubernetes_limits() -> None:
    longest = "hf://" + "o" * 40 + "/" + "n" * 50 + "@" + "r" * 60
    job = prefetch_job(sources.parse_source(longest), namespace="n", image="i", refresh=True)
    assert len(job["metadata"]["name"]) <= 63
