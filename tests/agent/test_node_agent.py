"""The cache agent of node-local caches: one process per node, each on its own cache directory (what the
node's hostPath gives it), the API stand-in enforcing what the node-local overlay grants the DaemonSet.
A node's agent keeps what pods on its node use and what its warm-up list names, and nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.hubserver import HubServer
from devtools.kubeapi import KubeApi
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.contract import cachedmodel, keys, sources, wire
from modelcache.contract.warmup import load_list
from tests.agent.test_agent import Agent, granted, value
from tests.helpers import age_use, modelcache, populate

NS = "modelcache-system"
TINY = keys.model_key(sources.parse_source("hf://tiny/model"))
JSON_ONLY = keys.model_key(sources.parse_source("hf://tiny/model"), ("*.json",))
WARM_UP = [{"source": "hf://tiny/model", "include": ["*.json"], "nodeSelector": {"gpu": "true"}}]


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[KubeApi, Path]]:
    """What the node-local overlay grants the node agents."""
    with granted(tmp_path, "overlays/node-local", "modelcache-node-agent") as found:
        yield found


def pod_on(api: KubeApi, name: str, node: str, key: str) -> None:
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "serving", "labels": {wire.MODEL_KEY_LABEL: key}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "vllm/vllm-openai:v0.6.0"}]},
        }
    )
    api.set_status("Pod", name, {"phase": "Running"}, namespace="serving")


def test_each_node_keeps_what_its_own_pods_and_its_warm_up_list_use(
    hub: HubServer, tmp_path: Path, kube: tuple[KubeApi, Path]
) -> None:
    api, kubeconfig = kube
    caches = {}
    for node, labels in (("gpu-1", {"gpu": "true"}), ("cpu-1", {})):
        api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": labels}})
        caches[node] = tmp_path / node / "cache"
        caches[node].mkdir(parents=True)
        populate(hub, caches[node])
        populate(hub, caches[node], include=("*.json",))
        for key in (TINY, JSON_ONLY):
            age_use(caches[node], key, days=8)
    pod_on(api, "llm-0", "gpu-1", TINY)
    pod_on(api, "embed-0", "cpu-1", JSON_ONLY)
    spec = {"source": "hf://tiny/big@main", "nodeSelector": {"gpu": "true"}}  # warm it on GPU nodes
    api.create(
        {"apiVersion": cachedmodel.API_VERSION, "kind": cachedmodel.KIND, "metadata": {"name": "big"}, "spec": spec}
    )

    agents = []
    for node, cache in caches.items():
        agents.append(
            Agent(
                cache,
                kubeconfig,
                f"modelcache-node-agent-{node}",
                tmp_path,
                MODELCACHE_NODE_NAME=node,
                MODELCACHE_WARM_UP=json.dumps(WARM_UP),
                MODELCACHE_WARM_UP_FILE=str(cache.parent / "warm.json"),
            )
        )
    try:
        gpu = agents[0].wait_for("gpu-1's round", lambda s: value(s, "modelcache_purge_rounds_total", node="gpu-1",
                                                                result="ok") == 1)  # fmt: skip
        cpu = agents[1].wait_for("cpu-1's round", lambda s: value(s, "modelcache_purge_rounds_total", node="cpu-1",
                                                                result="ok") == 1)  # fmt: skip
        gpu = agents[0].wait_for("gpu-1 scanned", lambda s: value(s, "modelcache_cache_models", node="gpu-1",
                                                                state="ready") == 2)  # fmt: skip
        cpu = agents[1].wait_for("cpu-1 scanned", lambda s: value(s, "modelcache_cache_models", node="cpu-1",
                                                                state="ready") == 1)  # fmt: skip
    finally:
        codes = [agent.stop() for agent in agents]
    assert codes == [0, 0]
    gpu_cache, cpu_cache = CacheLayout(caches["gpu-1"]), CacheLayout(caches["cpu-1"])
    assert check_ready(gpu_cache, TINY) is not None  # llm-0 runs on gpu-1
    assert check_ready(gpu_cache, JSON_ONLY) is not None  # gpu-1's warm-up list names it
    assert check_ready(cpu_cache, JSON_ONLY) is not None  # embed-0 runs on cpu-1
    assert check_ready(cpu_cache, TINY) is None  # only a pod on another node uses it: it goes here
    assert value(gpu, "modelcache_agent_leader", node="gpu-1") == 1  # always acting: no Lease to hold
    assert api.get("Lease", "modelcache-cache-agent", NS) is None
    assert all(dict(labels).get("node") == "cpu-1" for (_, labels) in cpu)  # every series names its node

    warm = {node: load_list((cache.parent / "warm.json").read_text()) for node, cache in caches.items()}
    assert sorted(m.source for m in warm["gpu-1"]) == ["hf://tiny/big@main", "hf://tiny/model@main"]
    assert warm["cpu-1"] == ()  # neither the setting's nor the CachedModel's selector matches cpu-1

    tiny = api.get("CachedModel", cachedmodel.name_for_key(TINY))
    assert tiny is not None
    assert [(e["volume"], e["node"], e["phase"]) for e in tiny["status"]["caches"]] == [
        ("node:gpu-1", "gpu-1", "Ready")
    ]
    assert tiny["status"]["nodes"] == 1
    listed = modelcache(caches["gpu-1"], "ls", "--nodes", env={"KUBECONFIG": str(kubeconfig)})
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:-1]]
    assert sorted((row[0], row[1]) for row in rows) == [
        ("cpu-1", "hf://tiny/model@main"),
        ("gpu-1", "hf://tiny/model@main"),
        ("gpu-1", "hf://tiny/model@main"),
    ]
    assert listed.stdout.splitlines()[-1] == "3 copies on 2 node(s)"


def test_warm_up_settings_without_a_node_are_refused_with_what_to_set(cache: Path) -> None:
    from modelcache.agent.config import AgentSettings
    from modelcache.runtime.settings import SettingsError

    with pytest.raises(SettingsError, match="set MODELCACHE_NODE_NAME"):
        AgentSettings.from_env({"MODELCACHE_CACHE_ROOT": str(cache), "MODELCACHE_WARM_UP": json.dumps(WARM_UP)})
    with pytest.raises(SettingsError, match="MODELCACHE_WARM_UP is invalid: entry 1: model 'hf://'"):
        AgentSettings.from_env(
            {
                "MODELCACHE_CACHE_ROOT": str(cache),
                "MODELCACHE_NODE_NAME": "n",
                "MODELCACHE_WARM_UP": '[{"source":"hf://"}]',
            }
        )


def test_the_warm_up_example_is_a_valid_cachedmodel_that_warms_exactly_the_gpu_nodes(
    kube: tuple[KubeApi, Path],
) -> None:
    import yaml

    from modelcache.agent.config import AgentSettings
    from modelcache.agent.warmup import NodeWarmUp
    from tests.manifests.rendering import ROOT

    api, _ = kube
    example = yaml.safe_load((ROOT / "examples" / "admin" / "warm-up-cachedmodel.yaml").read_text())
    api.create(example)  # the stand-in checks it against the CRD's schema, as the apiserver does
    for node, labels in (("gpu-1", {"nvidia.com/gpu.present": "true"}), ("cpu-1", {})):
        api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": labels}})
    for node, expected in (("gpu-1", [example["spec"]["source"]]), ("cpu-1", [])):
        settings = AgentSettings(cache_root="/", node_name=node)
        assert [m.source for m in NodeWarmUp(api.client("agent"), settings).models()] == expected, node
