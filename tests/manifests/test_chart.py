"""The Helm chart: lints cleanly with Helm's own engine, refuses bad values with messages that name
them, maps MLIS's values, and renders the same objects as the kustomize manifests (no drift).

The assertions shared with the kustomize output (schema, admission rules, RBAC) run on the chart's
renderings in test_kustomize.py and test_rbac.py through INSTALLS.
"""

from __future__ import annotations

import copy
from typing import Any

import helm_python
import pytest

from tests.manifests.rendering import (
    CHART,
    CHART_CUSTOM,
    CHART_EQUIVALENTS,
    NAMESPACE,
    Object,
    one,
    render,
    render_chart,
)
from webhook.config import Settings

# Labels Helm adds to every object, and the pod annotations that roll pods when settings change.
HELM_LABELS = (
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
)


def normalized(objects: list[Object]) -> dict[tuple[str, str], Object]:
    result = {}
    for obj in copy.deepcopy(objects):
        if obj["kind"] == "Namespace":
            continue  # the chart leaves the namespace to `helm install --create-namespace` by default
        labels = obj["metadata"].get("labels", {})
        for label in HELM_LABELS:
            labels.pop(label, None)
        template = obj.get("spec", {}).get("template", {}).get("metadata", {})
        template.pop("annotations", None)
        result[obj["kind"], obj["metadata"]["name"]] = obj
    return result


@pytest.mark.parametrize("overlay", sorted(CHART_EQUIVALENTS))
def test_the_chart_and_the_kustomize_overlay_render_the_same_objects(overlay: str) -> None:
    from_chart = normalized(render_chart(CHART_EQUIVALENTS[overlay]))
    from_kustomize = normalized(render(overlay))
    assert sorted(from_chart) == sorted(from_kustomize)
    for key, obj in from_kustomize.items():
        assert from_chart[key] == obj, key


@pytest.mark.parametrize("values", [{}, CHART_CUSTOM, *CHART_EQUIVALENTS.values()])
def test_the_chart_lints_cleanly_for_the_oldest_supported_kubernetes(values: dict[str, Any]) -> None:
    report = helm_python.lint(CHART, values, strict=True, kube_version="v1.30.0", namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"modelsCacheStorage": {"enabled": True}}, "'/modelsCacheStorage/storageClassName': minLength"),
        ({"modelsCacheStorage": {"mode": "copy"}}, "'/modelsCacheStorage/mode'"),
        ({"modelsCacheStorage": {"purgeUnusedCachedModelsAfter": "7 days"}}, "does not match pattern"),
        ({"modelsCacheStorage": {"pvcNameSuffix": "New_Disk"}}, "'/modelsCacheStorage/pvcNameSuffix'"),
        ({"modelsCacheStorage": {"storageSize": "lots"}}, "'/modelsCacheStorage/storageSize'"),
        ({"webhook": {"replicas": 1}}, "'/webhook/replicas': minimum"),
        ({"webhook": {"timeoutSeconds": 10}}, "'/webhook/timeoutSeconds': maximum: got 10, want 3"),
        ({"webhook": {"failurePolicy": "Retry"}}, "'/webhook/failurePolicy'"),
        ({"certificates": {"source": "vault"}}, "'/certificates/source'"),
        ({"excludedNamespaces": ["Kube System"]}, "'/excludedNamespaces/0'"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"cacheAgent": {"kind": "daemonset"}}, "'/cacheAgent/kind'"),
        ({"cacheAgent": {"minFree": "lots"}}, "'/cacheAgent/minFree'"),
        ({"cacheAgent": {"schedule": "daily"}}, "'/cacheAgent/schedule'"),
        ({"cacheAgent": {"namespaces": ["Team_B"]}}, "'/cacheAgent/namespaces/0'"),
        ({"fetcher": {"lockTimeout": "3600"}}, "'/fetcher/lockTimeout'"),  # a bare number has no unit
        ({"fetcher": {"takeoverAfter": "ten minutes"}}, "'/fetcher/takeoverAfter'"),
        ({"fetcher": {"uid": 0}}, "'/fetcher/uid'"),  # root is what runAsNonRoot refuses
        ({"nodeLocal": {"use": "sometimes"}}, "'/nodeLocal/use'"),
        ({"nodeLocal": {"path": "/var/lib/kubelet/pods"}}, "'/nodeLocal/path'"),  # never in a system directory
        ({"nodeLocal": {"path": "/data/../etc"}}, "'/nodeLocal/path'"),
        ({"nodeLocal": {"warmUp": [{"source": "ftp://mirror/x"}]}}, "'/nodeLocal/warmUp/0/source'"),
    ],
)
def test_bad_values_are_refused_naming_the_value_and_the_rule(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render_chart(values)
    assert message in str(caught.value)


def test_the_fetchers_patience_reaches_the_webhook_settings_which_accept_it() -> None:
    from webhook.config import Settings

    values = {"fetcher": {"lockTimeout": "3h", "takeoverAfter": "0", "uid": 1000}}
    data = one(render_chart(values), "ConfigMap", "modelcache-webhook-settings")["data"]
    assert (data["MODELCACHE_FETCHER_LOCK_TIMEOUT"], data["MODELCACHE_FETCHER_TAKEOVER_AFTER"]) == ("3h", "0")
    settings = Settings.from_env({**data, "KUBERNETES_SERVICE_HOST": "10.96.0.1"})  # as in the pod
    assert (settings.fetcher_lock_timeout, settings.fetcher_takeover_after) == (10800.0, 0.0)
    assert settings.fetcher_uid == 1000  # the owner of a volume root only it may write
    defaults = one(render_chart({}), "ConfigMap", "modelcache-webhook-settings")["data"]
    assert "MODELCACHE_FETCHER_LOCK_TIMEOUT" not in defaults  # the defaults are the webhook's own
    assert "MODELCACHE_FETCHER_UID" not in defaults


def test_mlis_values_keep_their_meaning() -> None:
    values = {
        "modelsCacheStorage": {
            "enabled": True,
            "storageClassName": "nfs-client",
            "storageSize": "1000Gi",
            "pvcNameSuffix": "big",
            "checkUnusedCachedModelsEvery": "1d",
            "purgeUnusedCachedModelsAfter": "1w",
            "bypassStorageCheck": True,
        }
    }
    settings = one(render_chart(values), "ConfigMap", "modelcache-controller-settings")["data"]
    assert settings["MODELCACHE_VOLUME_MODE"] == "clone"  # MLIS copies the PV into each namespace
    assert settings["MODELCACHE_STORAGE_CLASS"] == "nfs-client"
    assert settings["MODELCACHE_STORAGE_SIZE"] == "1000Gi"
    assert settings["MODELCACHE_CLAIM_NAME"] == "modelcache-big"  # a new suffix is a new PVC, as in MLIS
    assert settings["MODELCACHE_BYPASS_STORAGE_CHECK"] == "true"
    agent = one(render_chart(values), "ConfigMap", "modelcache-cache-agent-settings")["data"]
    assert agent["MODELCACHE_CHECK_UNUSED_CACHED_MODELS_EVERY"] == "1d"  # the purge runs beside the cache
    assert agent["MODELCACHE_PURGE_UNUSED_CACHED_MODELS_AFTER"] == "1w"
    mounted = one(render_chart(values), "Deployment", "modelcache-cache-agent")["spec"]["template"]["spec"]
    assert mounted["volumes"][0]["persistentVolumeClaim"]["claimName"] == "modelcache-big"
    disabled = one(
        render_chart({"modelsCacheStorage": {"enabled": False}}), "ConfigMap", "modelcache-controller-settings"
    )
    assert disabled["data"]["MODELCACHE_VOLUME_MODE"] == "existing"


def test_custom_values_reach_the_objects() -> None:
    objects = render_chart(CHART_CUSTOM)
    webhook = one(objects, "Deployment", "modelcache-webhook")
    assert webhook["spec"]["replicas"] == 3
    assert webhook["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example.com/ml/modelcache-webhook:0.1.0"
    )
    (hook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 2
    assert "batch-jobs" in hook["namespaceSelector"]["matchExpressions"][0]["values"]
    injected = one(objects, "ValidatingAdmissionPolicyBinding", "modelcache-injected")
    binding = injected["spec"]["matchResources"]["namespaceSelector"]
    assert binding == hook["namespaceSelector"]
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    webhook_settings = one(objects, "ConfigMap", "modelcache-webhook-settings")["data"]
    assert webhook_settings["MODELCACHE_FETCHER_IMAGE"] == "registry.example.com/ml/modelcache-fetcher:0.1.0"
    assert webhook_settings["MODELCACHE_LOG_LEVEL"] == "DEBUG"
    parsed = Settings.from_env({**webhook_settings, "KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    resources = (parsed.fetcher_cpu_request, parsed.fetcher_memory_request, parsed.fetcher_cpu_limit)
    assert (*resources, parsed.fetcher_memory_limit) == ("25m", "128Mi", "4", "2Gi")


def test_the_chart_installs_into_another_namespace_consistently() -> None:
    objects = render_chart({}, namespace="platform-ml")
    (hook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"]["service"]["namespace"] == "platform-ml"
    assert "platform-ml" in hook["namespaceSelector"]["matchExpressions"][0]["values"]
    settings = one(objects, "ConfigMap", "modelcache-webhook-settings")["data"]
    assert settings["MODELCACHE_VOLUME_STATUS"] == "platform-ml/modelcache-volumes"
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert all(subject["namespace"] == "platform-ml" for subject in binding["subjects"])


def test_the_cache_agent_goes_beside_each_cache_volume() -> None:
    # clone: one agent, beside the PVC that holds the volume every namespace shares; it asks every namespace.
    clone = render_chart(CHART_EQUIVALENTS["overlays/nfs"])
    (agent,) = [o for o in clone if o["kind"] == "Deployment" and o["metadata"]["name"] == "modelcache-cache-agent"]
    assert agent["metadata"]["namespace"] == NAMESPACE
    assert "MODELCACHE_PODS_NAMESPACE" not in one(clone, "ConfigMap", "modelcache-cache-agent-settings")["data"]
    assert one(clone, "ClusterRoleBinding", "modelcache-cache-agent")["subjects"] == [
        {"kind": "ServiceAccount", "name": "modelcache-cache-agent", "namespace": NAMESPACE}
    ]
    # existing: nothing to mount in the release namespace, so no agent unless namespaces are listed.
    assert not [o for o in render_chart({}) if "cache-agent" in o["metadata"]["name"]]
    listed = render_chart({"cacheAgent": {"namespaces": ["serving", "team-b"], "minFree": "10%"}})
    agents = [o for o in listed if o["kind"] == "Deployment" and o["metadata"]["name"] == "modelcache-cache-agent"]
    assert sorted(a["metadata"]["namespace"] for a in agents) == ["serving", "team-b"]
    settings = [o["data"] for o in listed if o["metadata"]["name"] == "modelcache-cache-agent-settings"]
    assert all(data["MODELCACHE_PURGE_MIN_FREE"] == "10%" for data in settings)
    # provision: a volume per namespace, so each agent asks only its own namespace (a Role, no ClusterRole).
    provision = render_chart({**CHART_CUSTOM, "cacheAgent": {"namespaces": ["serving"]}})
    data = one(provision, "ConfigMap", "modelcache-cache-agent-settings")["data"]
    assert data["MODELCACHE_PODS_NAMESPACE"] == "serving"
    # Its ClusterRole is for the CachedModel objects only (cluster-scoped): no pods beyond its namespace.
    cluster_rules = one(provision, "ClusterRole", "modelcache-cache-agent")["rules"]
    assert {r for rule in cluster_rules for r in rule["resources"]} == {"cachedmodels", "cachedmodels/status"}
    disabled = render_chart({**CHART_EQUIVALENTS["overlays/nfs"], "cacheAgent": {"enabled": False}})
    assert not [o for o in disabled if "cache-agent" in o["metadata"]["name"]]


def test_the_cronjob_alternative_runs_the_purge_command_with_the_same_settings() -> None:
    values = {
        **CHART_EQUIVALENTS["overlays/nfs"],
        "cacheAgent": {"kind": "cronjob", "schedule": "30 2 * * 0", "minFree": "50Gi", "dryRun": True},
    }
    objects = render_chart(values)
    cron = one(objects, "CronJob", "modelcache-cache-purge")
    assert cron["spec"]["schedule"] == "30 2 * * 0"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # one purge at a time without a Lease
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [
        "modelcache", "--log-format", "json", "purge", "--unused-for", "1w", "--min-free", "50Gi", "--dry-run",
    ]  # fmt: skip
    from modelcache.cli.main import _parser

    parsed = _parser().parse_args(container["command"][1:])  # the CLI accepts exactly this command line
    assert (parsed.unused_for, parsed.min_free, parsed.dry_run) == ("1w", "50Gi", True)
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "modelcache"
    assert not [o for o in objects if o["kind"] == "Deployment" and "cache-agent" in o["metadata"]["name"]]
    assert not [o for o in objects if o["kind"] == "Role" and "cache-agent" in o["metadata"]["name"]]  # no Lease
