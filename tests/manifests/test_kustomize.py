"""manifests/: every overlay (`kubectl kustomize`) and the chart (default and custom values, Helm's engine)
validate against the Kubernetes schema, follow the admission rules of FIELD_NOTES.md, and name what
the code names.

The CEL of the webhook's matchConditions and of the ValidatingAdmissionPolicy is evaluated (cel-python)
against the golden admission cases: an annotated pod is rejected before injection and admitted after.
"""

from __future__ import annotations

import json

import celpy
import jsonpatch
import kubernetes_validate
import pytest
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from modelcache.contract import annotation, wire
from modelcache.contract.volumes import STATUS_CONFIGMAP
from modelcache.controller.__main__ import HEALTH_PORT
from modelcache.controller.config import ControllerSettings
from modelcache.runtime.settings import ENV_PREFIX
from tests.manifests.rendering import INSTALLS, ROOT, Object, namespace_of, one, render, render_install
from tests.pod_security import restricted_violations
from webhook.config import Settings

SYSTEM_NAMESPACES = {"kube-system", "kube-public", "kube-node-lease"}
CASES = ROOT / "tests" / "webhook" / "cases"


@pytest.fixture(scope="module", params=INSTALLS)
def rendered(request: pytest.FixtureRequest) -> list[Object]:
    return render_install(request.param)


def test_every_kubernetes_object_validates_against_1_30_and_the_newest_schema(rendered: list[Object]) -> None:
    for obj in rendered:
        if obj["apiVersion"].startswith("cert-manager.io/"):
            continue  # a CRD: not in the Kubernetes schema
        for version in ("1.30.0", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_webhook_configuration_follows_the_admission_rules(rendered: list[Object]) -> None:
    namespace = namespace_of(rendered)
    (hook,) = one(rendered, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["timeoutSeconds"] <= 3
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["failurePolicy"] in ("Ignore", "Fail")  # Ignore by default; the policy fails closed for opted-in pods
    (excluded,) = hook["namespaceSelector"]["matchExpressions"]
    assert excluded["key"] == "kubernetes.io/metadata.name"
    assert excluded["operator"] == "NotIn"
    assert set(excluded["values"]) >= SYSTEM_NAMESPACES | {namespace}
    service = one(rendered, "Service")
    client = hook["clientConfig"]["service"]
    assert (client["name"], client["namespace"], client["path"]) == (service["metadata"]["name"], namespace, "/mutate")
    assert client["port"] == service["spec"]["ports"][0]["port"]


def test_the_policy_fails_closed_for_opted_in_pods_only(rendered: list[Object]) -> None:
    policy = one(rendered, "ValidatingAdmissionPolicy", "modelcache-injected")
    binding = one(rendered, "ValidatingAdmissionPolicyBinding", "modelcache-injected")
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (hook,) = one(rendered, "MutatingWebhookConfiguration")["webhooks"]
    assert binding["spec"]["matchResources"]["namespaceSelector"] == hook["namespaceSelector"]
    assert policy["spec"]["matchConditions"] == hook["matchConditions"]


def test_the_deployment_is_highly_available_and_restricted(rendered: list[Object]) -> None:
    deployment = one(rendered, "Deployment", "modelcache-webhook")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]
    (container,) = pod["spec"]["containers"]
    assert restricted_violations({"spec": pod["spec"]}, container) == []
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert container["lifecycle"]["preStop"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    # Liveness on the plain-HTTP health port: on HTTPS it fails until the first certificate arrives,
    # and the kubelet restarts a webhook that only waits for the controller to issue one.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    environ = {
        **one(rendered, "ConfigMap", "modelcache-webhook-settings")["data"],
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
    }
    settings = Settings.from_env(environ)
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert liveness.get("scheme", "HTTP") == "HTTP"
    assert ports[liveness["port"]] == settings.health_port
    assert pod["spec"]["serviceAccountName"] == "modelcache-webhook"  # read-one-ConfigMap rights (test_rbac)
    assert pod["spec"]["enableServiceLinks"] is False
    budget = one(rendered, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_names_and_settings_match_the_code(rendered: list[Object]) -> None:
    settings = one(rendered, "ConfigMap", "modelcache-webhook-settings")["data"]
    known = {ENV_PREFIX + name.upper() for name in Settings.__dataclass_fields__}
    assert set(settings) <= known  # the webhook refuses unknown MODELCACHE_* variables at start
    parsed = Settings.from_env({**settings, "KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    namespace = namespace_of(rendered)
    assert parsed.volume_status == f"{namespace}/{STATUS_CONFIGMAP}"
    controller_env = one(rendered, "ConfigMap", "modelcache-controller-settings")["data"]
    controller = ControllerSettings.from_env({**controller_env, "MODELCACHE_NAMESPACE": namespace})
    assert controller.lease_name == "modelcache-controller"
    tls_volume = one(rendered, "Deployment", "modelcache-webhook")["spec"]["template"]["spec"]["volumes"][0]
    assert tls_volume["secret"]["secretName"] == controller.tls_secret
    assert one(rendered, "MutatingWebhookConfiguration")["metadata"]["name"] == controller.webhook_configuration
    assert one(rendered, "Service")["metadata"]["name"] == controller.service_name
    (controller_container,) = one(rendered, "Deployment", "modelcache-controller")["spec"]["template"]["spec"][
        "containers"
    ]
    assert controller_container["ports"][0]["containerPort"] == HEALTH_PORT
    named = {name for o in rendered if o["kind"] == "Role" for r in o["rules"] for name in r.get("resourceNames", [])}
    assert {STATUS_CONFIGMAP, controller.lease_name} <= named
    if controller.manage_certificates:
        assert {controller.tls_secret, controller.ca_secret} <= named
    deployment = one(rendered, "Deployment", "modelcache-webhook")["spec"]["template"]["spec"]
    (container,) = deployment["containers"]
    assert container["ports"][0]["containerPort"] == parsed.port
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["tls"] == parsed.tls_dir
    (hook,) = one(rendered, "MutatingWebhookConfiguration")["webhooks"]
    assert annotation.MODEL_ANNOTATION in hook["matchConditions"][0]["expression"]
    policy = one(rendered, "ValidatingAdmissionPolicy", "modelcache-injected")
    validation = policy["spec"]["validations"][0]["expression"]
    assert f"'{wire.FETCHER_CONTAINER_NAME}'" in validation
    assert f"'{wire.CACHE_VOLUME_NAME}'" in validation


def evaluate(expression: str, pod: Object) -> object:
    environment = celpy.Environment()
    program = environment.program(environment.compile(expression))
    try:
        return program.evaluate({"object": json_to_cel(pod)})
    except CELEvalError as err:
        return err


def cel(expression: str, pod: Object) -> bool:
    result = evaluate(expression, pod)
    assert not isinstance(result, CELEvalError), f"{expression} failed: {result}"
    return bool(result)


def conditions_hold(conditions: list[Object], pod: Object) -> bool:
    """The apiserver's matchConditions rule: any false -> skipped; all true -> called; an error with none
    false would apply the failurePolicy, which our conditions must never cause."""
    results = [evaluate(c["expression"], pod) for c in conditions]
    if any(r is False or (not isinstance(r, CELEvalError) and not r) for r in results):
        return False
    assert not any(isinstance(r, CELEvalError) for r in results), results
    return True


def golden_pods() -> list[tuple[str, Object, Object | None]]:
    """(case, pod as submitted, pod after the webhook's patch, or None when it was not mutated)."""
    cases = []
    for case in sorted(CASES.iterdir()):
        review = json.loads((case / "review.json").read_text())
        expected = json.loads((case / "expected.json").read_text())
        if review["request"]["kind"]["kind"] != "Pod" or review["request"]["operation"] != "CREATE":
            continue
        pod = review["request"]["object"]
        after = jsonpatch.apply_patch(pod, expected["patch"]) if expected.get("patch") else None
        cases.append((case.name, pod, after))
    return cases


def injected(pod: Object) -> bool:
    """What the policy must demand, computed independently: our init container and our cache volume."""
    spec = pod["spec"]
    return any(c["name"] == wire.FETCHER_CONTAINER_NAME for c in spec.get("initContainers", [])) and any(
        v["name"] == wire.CACHE_VOLUME_NAME for v in spec.get("volumes", [])
    )


def test_cel_selects_annotated_pods_and_the_policy_admits_exactly_injected_ones() -> None:
    objects = render("base")
    (hook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    policy = one(objects, "ValidatingAdmissionPolicy", "modelcache-injected")
    validation = policy["spec"]["validations"][0]["expression"]
    rejected = admitted_after_patch = 0
    for name, pod, after in golden_pods():
        annotations = pod["metadata"].get("annotations", {})
        selected = annotation.MODEL_ANNOTATION in annotations and "kubernetes.io/config.mirror" not in annotations
        assert conditions_hold(hook["matchConditions"], pod) is selected, name
        if not selected:
            continue
        assert cel(validation, pod) is injected(pod), name
        rejected += not injected(pod)
        if after is not None:
            assert cel(validation, after) is True, f"{name}: the webhook's output must pass the policy"
            admitted_after_patch += 1
    assert rejected >= 10  # annotated pods as submitted, before any webhook ran
    assert admitted_after_patch >= 10


def test_every_pod_we_run_passes_pod_security_restricted(rendered: list[Object]) -> None:
    templates = [o["spec"]["template"] for o in rendered if o["kind"] in ("Deployment", "DaemonSet")]
    templates += [o["spec"]["jobTemplate"]["spec"]["template"] for o in rendered if o["kind"] == "CronJob"]
    assert templates
    for template in templates:
        for container in template["spec"]["containers"]:
            assert restricted_violations({"spec": template["spec"]}, container) == [], container["name"]


def test_the_controller_may_lift_its_scheduling_gate_and_change_nothing_else_in_a_pod(rendered: list[Object]) -> None:
    from modelcache.controller.waiting import ungate_patch

    namespace = namespace_of(rendered)
    policy = one(rendered, "ValidatingAdmissionPolicy", "modelcache-controller-lifts-gates-only")["spec"]
    binding = one(rendered, "ValidatingAdmissionPolicyBinding", "modelcache-controller-lifts-gates-only")["spec"]
    assert (policy["failurePolicy"], binding["validationActions"]) == ("Fail", ["Deny"])
    assert "matchResources" not in binding  # every namespace: gated pods are anywhere
    (condition,) = policy["matchConditions"]

    def by(username: str) -> bool:
        environment = celpy.Environment()
        program = environment.program(environment.compile(condition["expression"]))
        return bool(program.evaluate({"request": json_to_cel({"userInfo": {"username": username}})}))

    assert by(f"system:serviceaccount:{namespace}:modelcache-controller")
    assert not by("system:serviceaccount:serving:deployer")
    assert not by("system:node:gpu-1")

    def admitted(old: Object, new: Object) -> bool:
        results = []
        for validation in policy["validations"]:
            environment = celpy.Environment()
            program = environment.program(environment.compile(validation["expression"]))
            result = program.evaluate({"object": json_to_cel(new), "oldObject": json_to_cel(old)})
            assert not isinstance(result, CELEvalError), result
            results.append(bool(result))
        return all(results)

    gated: Object = {
        "metadata": {"name": "llm-0", "namespace": "serving", "labels": {"app": "llm"}},
        "spec": {
            "containers": [{"name": "app", "image": "vllm/vllm-openai:v0.11.0"}],
            "schedulingGates": [{"name": "example.com/quota"}, {"name": wire.SCHEDULING_GATE}],
        },
    }
    lifted = jsonpatch.apply_patch(gated, ungate_patch(gated))
    assert lifted["spec"]["schedulingGates"] == [{"name": "example.com/quota"}]
    assert admitted(gated, lifted)  # what the controller sends passes
    only_ours = {**gated, "spec": {**gated["spec"], "schedulingGates": [{"name": wire.SCHEDULING_GATE}]}}
    assert admitted(only_ours, jsonpatch.apply_patch(only_ours, ungate_patch(only_ours)))
    relabelled = json.loads(json.dumps(lifted))
    relabelled["metadata"]["labels"]["app"] = "other"
    assert not admitted(gated, relabelled)
    reimaged = json.loads(json.dumps(lifted))
    reimaged["spec"]["containers"][0]["image"] = "attacker/image:latest"
    assert not admitted(gated, reimaged)
    others_gate = json.loads(json.dumps(gated))
    others_gate["spec"]["schedulingGates"] = [{"name": wire.SCHEDULING_GATE}]
    assert not admitted(gated, others_gate)  # someone else's gate is not ours to lift
    ungated = {**gated, "spec": {"containers": gated["spec"]["containers"]}}
    assert not admitted(ungated, ungated)  # a pod without our gate: nothing to do for the controller
