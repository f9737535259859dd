"""RBAC in manifests/: exactly the grants docs/security.md explains, and no more.

That they are enough is shown elsewhere: the controller and webhook tests run against the API
stand-in with these very rules enforced, and fail on any refusal.
"""

from __future__ import annotations

import pytest

from devtools.kubeapi import grants_of
from tests.manifests.rendering import INSTALLS, Object, one, render, render_install
from tests.pod_security import restricted_violations

NS = "modelcache-system"
# (scope, apiGroup, resource, verbs, resourceNames); scope "" is cluster-wide.
Grant = tuple[str, str, str, tuple[str, ...], tuple[str, ...]]
EXPECTED: dict[str, set[Grant]] = {
    "modelcache-webhook": {
        (NS, "", "configmaps", ("get", "list", "watch"), ("modelcache-volumes",)),
        ("", "", "persistentvolumeclaims", ("list", "watch"), ()),
        ("", "modelcache.io", "cachedmodels", ("list", "watch"), ()),
    },
    "modelcache-controller": {
        (NS, "coordination.k8s.io", "leases", ("create",), ()),
        (NS, "coordination.k8s.io", "leases", ("get", "update"), ("modelcache-controller",)),
        (NS, "", "configmaps", ("create",), ()),
        (NS, "", "configmaps", ("get", "patch"), ("modelcache-volumes",)),
        (NS, "", "secrets", ("create",), ()),
        (NS, "", "secrets", ("get", "update"), ("modelcache-ca", "modelcache-webhook-tls")),
        ("", "", "pods", ("list", "watch"), ()),
        ("", "", "persistentvolumeclaims", ("list", "watch", "create"), ()),
        ("", "", "persistentvolumes", ("get", "list", "create", "delete", "patch"), ()),
        ("", "storage.k8s.io", "storageclasses", ("get",), ()),
        ("", "", "pods", ("patch",), ()),
        ("", "batch", "jobs", ("list", "create"), ()),
        ("", "", "events", ("create", "get", "patch"), ()),
        ("", "modelcache.io", "cachedmodels", ("list",), ()),
        (
            "",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            ("get", "patch"),
            ("modelcache-webhook",),
        ),
    },
    # Where it runs (clone mode: beside the shared volume's PVC): its Lease, live pods everywhere, and
    # the CachedModel objects (cluster-scoped) whose entry for its volume it keeps.
    "modelcache-cache-agent": {
        (NS, "coordination.k8s.io", "leases", ("create",), ()),
        (NS, "coordination.k8s.io", "leases", ("get", "update"), ("modelcache-cache-agent",)),
        ("", "", "pods", ("list",), ()),
        ("", "modelcache.io", "cachedmodels", ("get", "list", "create", "delete"), ()),
        ("", "modelcache.io", "cachedmodels/status", ("update",), ()),
    },
    # On every node (node-local caches): no Lease (one agent per node's directory); live pods (on its
    # node: a field selector, which RBAC cannot express), its Node's labels for its warm-up list, and the
    # CachedModel objects whose entry node:<name> it keeps.
    "modelcache-node-agent": {
        ("", "", "pods", ("list",), ()),
        ("", "", "nodes", ("get",), ()),
        ("", "modelcache.io", "cachedmodels", ("get", "list", "create", "delete"), ()),
        ("", "modelcache.io", "cachedmodels/status", ("update",), ()),
    },
}
# With cert-manager issuing the certificates, the controller needs no rights to them.
CERTIFICATE_GRANTS: set[Grant] = {
    (NS, "", "secrets", ("create",), ()),
    (NS, "", "secrets", ("get", "update"), ("modelcache-ca", "modelcache-webhook-tls")),
    ("", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", ("get", "patch"), ("modelcache-webhook",)),
}


def flattened(objects: list[Object], account: str) -> set[tuple[str, str, str, tuple[str, ...], tuple[str, ...]]]:
    found = set()
    for scope, rule in grants_of(objects, service_account=account, namespace=NS):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.add((scope, group, resource, tuple(rule["verbs"]), tuple(rule.get("resourceNames", ()))))
    return found


@pytest.mark.parametrize("install", INSTALLS)
@pytest.mark.parametrize("account", sorted(EXPECTED))
def test_each_identity_has_exactly_the_documented_grants(install: str, account: str) -> None:
    objects = render_install(install)
    expected = EXPECTED[account]
    if account in ("modelcache-cache-agent", "modelcache-node-agent") and not any(
        o["kind"] == "ServiceAccount" and o["metadata"]["name"] == account and o["metadata"]["namespace"] == NS
        for o in objects
    ):
        expected = set()  # no cache volume here to purge (existing and provision mode: see test_chart.py),
        # or no node-local caches
    settings = one(objects, "ConfigMap", "modelcache-controller-settings")["data"]
    if settings["MODELCACHE_MANAGE_CERTIFICATES"] == "false":
        expected = expected - CERTIFICATE_GRANTS
    assert flattened(objects, account) == expected


@pytest.mark.parametrize("install", INSTALLS)
def test_no_rule_uses_a_wildcard_or_reaches_secrets_beyond_our_namespace(install: str) -> None:
    for role in (o for o in render_install(install) if o["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
            if role["kind"] == "ClusterRole":
                assert "secrets" not in rule["resources"]
                # Two exceptions, explained in docs/security.md: the controller sets Retain on the shared PV
                # and frees it for a reinstall's PVC (a provisioner names that PV, so no resourceNames);
                # the cache agents write the status of our own cluster-scoped CachedModel objects, whose
                # names come from model keys.
                writes = {"update", "patch"} & set(rule["verbs"])
                retaining = rule["resources"] == ["persistentvolumes"] and writes == {"patch"}
                own_status = rule["resources"] == ["cachedmodels/status"] and rule["apiGroups"] == ["modelcache.io"]
                # And the controller lifts the scheduling gate of pods that waited for their model, and
                # counts its own Events up; the pods and Events are anywhere, named by their workloads.
                ungating = rule["resources"] == ["pods"] and writes == {"patch"}
                events = rule["resources"] == ["events"] and writes == {"patch"}
                allowed = retaining or own_status or ungating or events
                assert not writes or rule.get("resourceNames") or allowed, role["metadata"]["name"]


def test_only_the_pods_that_need_a_token_mount_one() -> None:
    objects = render("overlays/nfs")
    for account in (o for o in objects if o["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False  # opt-in per pod spec only
    mounted = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["automountServiceAccountToken"]
        for d in objects
        if d["kind"] == "Deployment"
    }
    assert mounted == {"modelcache-webhook": True, "modelcache-controller": True, "modelcache-cache-agent": True}


def test_the_controller_runs_restricted_with_a_lease_and_a_liveness_probe() -> None:
    deployment = one(render("base"), "Deployment", "modelcache-controller")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert restricted_violations({"spec": pod["spec"]}, container) == []
    assert container["command"] == ["modelcache-controller"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert env == {"MODELCACHE_IDENTITY": "metadata.name", "MODELCACHE_NAMESPACE": "metadata.namespace"}
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_cache_agent_runs_restricted_with_the_cache_a_lease_and_a_liveness_probe() -> None:
    deployment = one(render("overlays/nfs"), "Deployment", "modelcache-cache-agent")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert restricted_violations({"spec": pod["spec"]}, container) == []
    assert container["command"] == ["modelcache", "agent"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert env == {"MODELCACHE_IDENTITY": "metadata.name", "MODELCACHE_NAMESPACE": "metadata.namespace"}
    (mount,) = container["volumeMounts"]
    settings = one(render("overlays/nfs"), "ConfigMap", "modelcache-cache-agent-settings")["data"]
    assert mount["mountPath"] == settings["MODELCACHE_CACHE_ROOT"]
    (volume,) = pod["spec"]["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == "modelcache"  # clone mode's PVC in its namespace
    from modelcache.agent.config import AgentSettings

    assert AgentSettings.from_env({**settings, "MODELCACHE_CACHE_ROOT": "/"}).lease_name == "modelcache-cache-agent"


@pytest.mark.parametrize("install", ["kustomize:overlays/node-local", "helm:custom"])
def test_the_node_agent_runs_restricted_on_every_node_with_its_nodes_cache_and_the_warm_container(
    install: str,
) -> None:
    from modelcache.agent.config import AgentSettings
    from modelcache.controller.config import ControllerSettings

    objects = render_install(install)
    daemonset = one(objects, "DaemonSet", "modelcache-node-agent")
    pod = daemonset["spec"]["template"]
    agent, warm = pod["spec"]["containers"]
    for container in (agent, warm):
        assert restricted_violations({"spec": pod["spec"]}, container) == [], container["name"]
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in agent["env"]}
    assert env["MODELCACHE_NODE_NAME"] == "spec.nodeName"  # no Lease: the node names its cache
    settings = one(objects, "ConfigMap", "modelcache-node-agent-settings")["data"]
    parsed = AgentSettings.from_env({**settings, "MODELCACHE_CACHE_ROOT": "/", "MODELCACHE_NODE_NAME": "gpu-1"})
    assert warm["command"][-2:] == ["--list", parsed.warm_up_file]
    assert warm["command"][:3] == ["modelcache", "--cache", settings["MODELCACHE_CACHE_ROOT"]]
    assert {m["mountPath"] for m in agent["volumeMounts"]} == {"/cache", "/run/modelcache"}
    (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    controller_env = one(objects, "ConfigMap", "modelcache-controller-settings")["data"]
    controller = ControllerSettings.from_env(controller_env)
    assert claim == controller.node_claim  # the PVC the controller makes in its own namespace for the agents
    assert controller.node_local in ("always", "fallback")
    assert not [v for v in pod["spec"]["volumes"] if "hostPath" in v]  # a PVC: allowed under restricted
    if install == "helm:custom":
        assert parsed.warm_up[0].node_selector == {"nvidia.com/gpu.present": "true"}
        assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert {"name": "HF_ENDPOINT", "value": "http://hub-mirror.mirrors:8080"} in warm["env"]
        assert controller.node_local_path == "/mnt/nvme/models"
