"""Node-local caches in the shipped images: the node agent DaemonSet's pod of the node-local overlay (the
agent from the webhook image, the warm container from the fetcher image) run as a kubelet runs it on one
node, against the API stand-in with the overlay's RBAC; and the node preparation example as written."""

from __future__ import annotations

import copy
import json
import stat
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from devtools.hubserver import HubServer
from devtools.kubeapi import KubeApi, grants_of
from devtools.webhook_process import free_port
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.contract import cachedmodel, keys, sources
from tests.helpers import write_kubeconfig
from tests.images.kubelet import ARBITRARY_UID, FETCHER, ROOT, WEBHOOK, Kubelet, restricted
from tests.images.test_webhook_image import wait_until
from tests.manifests.rendering import one, render

NS = "modelcache-system"
BIG = keys.model_key(sources.parse_source("hf://tiny/big"))
pytestmark = pytest.mark.usefixtures("images")


@pytest.fixture
def manifests() -> list[dict[str, Any]]:
    return render("overlays/node-local")


def daemonset_pod(objects: list[dict[str, Any]], node: str) -> dict[str, Any]:
    """The pod the DaemonSet controller creates on `node`, with the images under test."""
    template = copy.deepcopy(one(objects, "DaemonSet", "modelcache-node-agent")["spec"]["template"])
    images = {"agent": WEBHOOK, "warm": FETCHER}
    for container in template["spec"]["containers"]:
        container["image"] = images[container["name"]]
    metadata = {**template["metadata"], "name": f"modelcache-node-agent-{node[-5:]}", "namespace": NS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {**template["spec"], "nodeName": node}}


def entries(api: KubeApi) -> list[tuple[str, str]]:
    model = api.get("CachedModel", cachedmodel.name_for_key(BIG)) or {}
    return [(e["volume"], e["phase"]) for e in (model.get("status") or {}).get("caches", [])]


def test_the_node_agent_pod_warms_its_node_and_reports_the_copy_as_its_nodes(
    manifests: list[dict[str, Any]], hub: HubServer, tmp_path: Path
) -> None:
    grants = grants_of(manifests, service_account="modelcache-node-agent", namespace=NS)
    with KubeApi(grants={"modelcache-node-agent": grants}) as api:
        api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-7", "labels": {"gpu": "true"}}})
        kubeconfig = write_kubeconfig(tmp_path / "agent.kubeconfig", api.url, "modelcache-node-agent")
        kubeconfig.chmod(0o644)
        node_cache = tmp_path / "node" / "var-lib-modelcache"
        node_cache.mkdir(parents=True)
        node_cache.chmod(0o777)  # prepared (the next test runs the example that does it)
        port = free_port()
        data = {
            **one(manifests, "ConfigMap", "modelcache-node-agent-settings")["data"],
            "MODELCACHE_METRICS_PORT": str(port),
            "MODELCACHE_SCAN_EVERY": "1s",
            "MODELCACHE_WARM_UP": json.dumps([{"source": "hf://tiny/big", "nodeSelector": {"gpu": "true"}}]),
        }
        pod = daemonset_pod(manifests, "gpu-7")
        warm = next(c for c in pod["spec"]["containers"] if c["name"] == "warm")
        warm["env"].append({"name": "HF_ENDPOINT", "value": hub.url})  # nodeLocal.warmUpEnv: a Hub mirror
        kubelet = Kubelet(
            pod,
            tmp_path / "pod",
            claims={"modelcache-node": node_cache},
            config_maps={"modelcache-node-agent-settings": data},
            kubeconfig=kubeconfig,
            node="gpu-7",
        )
        with kubelet.started("agent") as agent, kubelet.started("warm") as warming:
            wait_until("the model on the node", lambda: check_ready(CacheLayout(node_cache), BIG) is not None, warming)
            metrics = f"http://127.0.0.1:{port}/metrics"

            def reported() -> bool:
                text = urllib.request.urlopen(metrics, timeout=5).read().decode()
                return 'modelcache_cache_models{node="gpu-7",state="ready"} 1.0' in text

            wait_until("the node's metrics", reported, agent)
            wait_until("its CachedModel entry", lambda: entries(api) == [("node:gpu-7", "Ready")], agent)
            warm_code, _ = warming.stop(grace=30)
            agent_code, _ = agent.stop(grace=60)
        assert (warm_code, agent_code) == (0, 0), agent.logs() + warming.logs()
        assert api.get("Lease", "modelcache-cache-agent", NS) is None


def test_the_node_preparation_example_opens_a_kubelet_made_directory_to_fetchers_of_every_uid(
    hub: HubServer, tmp_path: Path
) -> None:
    namespace, daemonset = yaml.safe_load_all((ROOT / "examples" / "admin" / "node-local-prepare.yaml").read_text())
    for obj in (namespace, daemonset):
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"  # for the hostPath
    template = daemonset["spec"]["template"]
    (prepare,) = template["spec"]["initContainers"]
    (idle,) = template["spec"]["containers"]
    assert prepare["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    for container in (prepare, idle):
        container["image"] = FETCHER
    node_dir = tmp_path / "node" / "var" / "lib" / "modelcache"
    metadata = {"name": "prepare-x", "namespace": namespace["metadata"]["name"]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {**template["spec"], "containers": [idle]}}
    kubelet = Kubelet(pod, tmp_path / "pod", host_paths={"/var/lib/modelcache": node_dir})
    kubelet.volume(template["spec"]["volumes"][0])
    assert stat.S_IMODE(node_dir.stat().st_mode) == 0o755  # as the kubelet creates it: only root may write
    result = kubelet.run("prepare")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(node_dir.stat().st_mode) & 0o777 == 0o777
    fetched = restricted(
        FETCHER, "--cache", "/cache", "prefetch", "hf://tiny/big", uid=ARBITRARY_UID,
        extra=["-v", f"{node_dir}:/cache", "--env", f"HF_ENDPOINT={hub.url}", "--entrypoint", "modelcache"],
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr  # a pod's fetcher under any UID can now fill the node's cache
    assert check_ready(CacheLayout(node_dir), BIG) is not None
