"""CachedModel objects kept by the cache agent: made for every model a pod asked for, with this volume's
entry true in every phase, dropped when the model leaves the volume. Against the API stand-in, which
serves the CRD from manifests/ (schema, status subresource, CEL rules) and enforces the agent's RBAC
as the nfs overlay grants it; the caches are filled by the real fetcher."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.hubserver import HubServer
from devtools.kubeapi import KubeApi, grants_of
from modelcache.agent.cachedmodels import CachedModels
from modelcache.cache.inventory import failed_before_any_file, list_models
from modelcache.cache.layout import CacheLayout
from modelcache.cache.outcomes import OutcomeRecord, write_outcome
from modelcache.contract import cachedmodel, keys, sources, wire
from modelcache.contract.pods import PodRef
from tests.helpers import populate
from tests.manifests.rendering import ROOT, render

NS = "modelcache-system"
VOLUME = f"{NS}/modelcache"
TINY = keys.model_key(sources.parse_source("hf://tiny/model"))
JSON_ONLY = keys.model_key(sources.parse_source("hf://tiny/model"), ("*.json",))
HOLDER = """
import sys, time
from pathlib import Path
from modelcache.cache.layout import CacheLayout
from modelcache.cache.locking import ModelLock
from modelcache.cache.owners import Identity, Progress
from modelcache.cache.patience import LockSettings
layout = CacheLayout(Path(sys.argv[1])); layout.ensure()
lock = ModelLock(layout, sys.argv[2], identity=Identity.here(pod="llm-0", namespace="serving", node="gpu-3"),
                 settings=LockSettings(heartbeat_every=0.1), source="hf://big/model@main", include=("*.gguf",))
lock.acquire()
progress = Progress(total=4 << 30); progress.add(1 << 30)
lock.start_heartbeat(progress, attempt="a1")
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def api() -> Iterator[KubeApi]:
    grants = grants_of(render("overlays/nfs"), service_account="modelcache-cache-agent", namespace=NS)
    with KubeApi(token="agent", grants={"agent": grants}) as stand_in:
        yield stand_in
        assert stand_in.forbidden == []


def agent(api: KubeApi, volume: str = VOLUME) -> CachedModels:
    return CachedModels(api.client("agent"), volume=volume)


def the(api: KubeApi, key: str) -> dict[str, Any]:
    found = api.get("CachedModel", cachedmodel.name_for_key(key))
    assert found is not None, f"no CachedModel for {key}: {[o['metadata']['name'] for o in api.list('CachedModel')]}"
    return found


def printed(obj: dict[str, Any]) -> dict[str, object]:
    """The columns of `kubectl get cachedmodels`, read through the CRD's own jsonPaths."""
    crd = yaml.safe_load((ROOT / "manifests" / "base" / "cachedmodel-crd.yaml").read_text())
    columns = {}
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        found: object = obj
        for part in column["jsonPath"].strip(".").split("."):
            found = found.get(part) if isinstance(found, dict) else None
        columns[column["name"]] = found
    return columns


def test_a_model_a_pod_fetched_gets_an_object_that_reads_ready_at_a_glance(
    hub: HubServer, cache: Path, api: KubeApi
) -> None:
    populate(hub, cache)
    models = list_models(CacheLayout(cache))
    report = agent(api).sync(models, {TINY: [PodRef("serving", "llm-0", "u1"), PodRef("serving", "llm-1", "u2")]})
    obj = the(api, TINY)
    assert report.created == [obj["metadata"]["name"]]
    assert obj["metadata"]["labels"] == {cachedmodel.ADOPTED_LABEL: "true", wire.MODEL_KEY_LABEL: TINY}
    assert obj["spec"] == {"source": models[0].source, "include": []}
    status = obj["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"  # what `kubectl wait --for=condition=Ready` reads
    (entry,) = status["caches"]
    assert entry["volume"] == VOLUME
    assert (entry["phase"], entry["pods"], entry["files"]) == ("Ready", 2, models[0].files)
    assert entry["sizeBytes"] == models[0].size == status["sizeBytes"]
    assert entry["version"] == models[0].version == status["version"] == hub.repos["tiny/model"].main
    columns = printed(obj)
    assert columns["Source"] == models[0].source
    assert (columns["Phase"], columns["Pods"], columns["Key"]) == ("Ready", 2, TINY)
    assert columns["Size"]
    assert columns["Age"]

    puts = len([r for r in api.requests if r[0] == "PUT"])
    again = agent(api).sync(list_models(CacheLayout(cache)), {TINY: [PodRef("serving", "llm-0", "u1")] * 2})
    assert again.updated == []
    assert again.created == []
    assert len([r for r in api.requests if r[0] == "PUT"]) == puts  # an idle cache writes nothing


def test_a_download_in_progress_shows_who_and_how_far_then_ready(hub: HubServer, cache: Path, api: KubeApi) -> None:
    key = keys.model_key(sources.parse_source("hf://big/model@main"), ("*.gguf",))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache), key], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        agent(api).sync(list_models(CacheLayout(cache)), {})
        obj = the(api, key)
        assert obj["spec"] == {"source": "hf://big/model@main", "include": ["*.gguf"]}
        assert cachedmodel.name_for_key(key) == obj["metadata"]["name"]
        (entry,) = obj["status"]["caches"]
        assert entry["phase"] == "Downloading" == obj["status"]["phase"]
        assert (entry["bytesDone"], entry["bytesTotal"]) == (1 << 30, 4 << 30)
        assert "pod serving/llm-0 on node gpu-3" in entry["holder"]
        assert obj["status"]["progress"] == "25 % (1.0 GiB of 4.0 GiB)"
        assert next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")["status"] == "False"
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_fetch_says_why_and_a_corrupt_model_what_to_do(hub: HubServer, cache: Path, api: KubeApi) -> None:
    layout = CacheLayout(cache)
    layout.ensure()
    gated = keys.model_key(sources.parse_source("hf://org/gated"))
    message = "the Hub at http://127.0.0.1:1 refused the token: HTTP 403 for org/gated; accept its terms"
    failure = OutcomeRecord(kind="failed", key=gated, source="hf://org/gated", at=time.time(), reason="AccessDenied",
                            message=message, pod="llm-0", namespace="serving")  # fmt: skip
    write_outcome(layout, failure)
    populate(hub, cache)
    marker = layout.root / list_models(layout)[-1].path
    victim = next(p for p in sorted(marker.rglob("*")) if p.is_file())
    victim.write_bytes(b"damaged")
    models = list_models(layout)
    agent(api).sync([*models, *failed_before_any_file(layout, {m.key for m in models})], {})
    failed = the(api, gated)["status"]
    assert (failed["phase"], failed["caches"][0]["phase"]) == ("Failed", "Failed")
    assert failed["caches"][0]["message"] == f"AccessDenied: {message}"
    ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "FetchFailed")
    assert message in ready["message"]
    corrupt = the(api, TINY)["status"]["caches"][0]
    assert corrupt["phase"] == "Failed"
    assert "modelcache verify --repair" in corrupt["message"]


def test_two_volumes_keep_their_own_entries_and_ready_means_ready_in_both(
    hub: HubServer, tmp_path: Path, api: KubeApi
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
    populate(hub, first)
    agent(api, "team-a/modelcache").sync(list_models(CacheLayout(first)), {})
    layout = CacheLayout(second)
    layout.ensure()
    write_outcome(layout, OutcomeRecord(kind="failed", key=TINY, source="hf://tiny/model", at=time.time(),
                                        reason="DiskFull", message="no space left on device"))  # fmt: skip
    agent(api, "team-b/modelcache").sync(failed_before_any_file(layout, set()), {})
    status = the(api, TINY)["status"]
    assert [(e["volume"], e["phase"]) for e in status["caches"]] == [
        ("team-a/modelcache", "Ready"),
        ("team-b/modelcache", "Failed"),
    ]
    assert status["phase"] == "Failed"
    populate(hub, second)
    agent(api, "team-b/modelcache").sync(list_models(layout), {})
    status = the(api, TINY)["status"]
    assert status["phase"] == "Ready"
    assert "team-a/modelcache, team-b/modelcache" in status["conditions"][0]["message"]

    shutil.rmtree(second)  # team-b's volume no longer has it: its entry goes, the object stays for team-a
    second.mkdir()
    report = agent(api, "team-b/modelcache").sync([], {})
    assert report.deleted == []
    assert [e["volume"] for e in the(api, TINY)["status"]["caches"]] == ["team-a/modelcache"]
    report = agent(api, "team-a/modelcache").sync([], {})  # purged everywhere: the adopted object goes
    assert report.deleted == [cachedmodel.name_for_key(TINY)]
    assert api.get("CachedModel", cachedmodel.name_for_key(TINY)) is None


def test_a_declared_object_is_found_by_its_source_and_never_deleted(hub: HubServer, cache: Path, api: KubeApi) -> None:
    api.create(
        {
            "apiVersion": cachedmodel.API_VERSION,
            "kind": "CachedModel",
            "metadata": {"name": "tiny-json"},
            "spec": {"source": "hf://tiny/model", "include": ["*.json"]},
        }
    )
    populate(hub, cache, include=("*.json",))
    report = agent(api).sync(list_models(CacheLayout(cache)), {})
    assert report.created == []
    declared = api.get("CachedModel", "tiny-json")
    assert declared is not None
    assert (declared["status"]["key"], declared["status"]["phase"]) == (JSON_ONLY, "Ready")
    assert api.get("CachedModel", cachedmodel.name_for_key(JSON_ONLY)) is None  # no second object
    assert agent(api).sync([], {}).deleted == []
    kept = api.get("CachedModel", "tiny-json")
    assert kept is not None
    assert kept["status"]["caches"] == []
    assert kept["status"]["phase"] == "Pending"


def test_the_crd_refuses_a_change_of_source_and_status_written_with_the_object() -> None:

    with KubeApi() as api:
        _source_is_immutable_and_status_separate(api.client())


def _source_is_immutable_and_status_separate(client: Any) -> None:
    from modelcache.runtime.kube import ApiError, path

    where = path(cachedmodel.API_VERSION, cachedmodel.PLURAL)
    body = {"apiVersion": cachedmodel.API_VERSION, "kind": "CachedModel", "metadata": {"name": "m"},
            "spec": {"source": "hf://org/a"}, "status": {"phase": "Ready"}}  # fmt: skip
    created = client.create(where, body)
    assert created["spec"]["include"] == []  # the schema's default
    assert "status" not in created  # written through the object, the status is ignored
    with pytest.raises(ApiError) as refused:
        client.patch(f"{where}/m", {"spec": {"source": "hf://org/b"}})
    assert refused.value.status == 422
    assert "spec.source and spec.include cannot change" in refused.value.message
    with pytest.raises(ApiError) as invalid:
        client.replace(f"{where}/m/status", {**created, "status": {"phase": "Almost"}})
    assert invalid.value.status == 422


def test_a_declared_object_is_ready_only_once_every_namespace_it_names_has_it(
    hub: HubServer, tmp_path: Path, api: KubeApi
) -> None:
    api.create(
        {
            "apiVersion": cachedmodel.API_VERSION,
            "kind": "CachedModel",
            "metadata": {"name": "tiny"},
            "spec": {"source": "hf://tiny/model", "namespaces": ["team-a", "team-b"]},
        }
    )
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
        populate(hub, directory)
    CachedModels(api.client("agent"), volume="team-a/modelcache").sync(list_models(CacheLayout(first)), {})
    status = api.get("CachedModel", "tiny")["status"]  # type: ignore[index]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["status"]) == ("Pending", "False")  # kubectl wait goes on waiting
    assert "not in team-b/modelcache yet" in ready["message"]
    CachedModels(api.client("agent"), volume="team-b/modelcache").sync(list_models(CacheLayout(second)), {})
    status = api.get("CachedModel", "tiny")["status"]  # type: ignore[index]
    assert status["phase"] == "Ready"
    # In clone mode every namespace's pods share the agent's one volume: that one is enough.
    api.create(
        {
            "apiVersion": cachedmodel.API_VERSION,
            "kind": "CachedModel",
            "metadata": {"name": "tiny-json"},
            "spec": {"source": "hf://tiny/model", "include": ["*.json"], "namespaces": ["team-a", "team-b"]},
        }
    )
    populate(hub, first, include=("*.json",))
    shared = CachedModels(api.client("agent"), volume=VOLUME, mode="clone")
    shared.sync(list_models(CacheLayout(first)), {})
    assert api.get("CachedModel", "tiny-json")["status"]["phase"] == "Ready"  # type: ignore[index]
