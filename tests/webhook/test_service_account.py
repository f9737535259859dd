"""The fetcher gets no ServiceAccount token, and a pod is reviewed once.

The apiserver runs its ServiceAccount admission plugin before the webhooks, and again after a webhook
changed the pod (reinvocation); if that second run changes the pod, our webhook (reinvocationPolicy
IfNeeded) is called a second time. `service_account_plugin` is the plugin's token rule as the
apiserver implements it (plugin/pkg/admission/serviceaccount, mountServiceAccountToken): every init
and app container gets the `kube-api-access-*` projected volume at the token path, unless it already
mounts something there; the volume is added once.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from devtools.admission import admission_review
from modelcache.contract import wire
from webhook.config import Settings
from webhook.handlers import review_admission
from webhook.review import decode_patch

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
CASES = Path(__file__).parent / "cases"


def service_account_plugin(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod after the ServiceAccount admission plugin's token mount (automount on)."""
    pod = copy.deepcopy(pod)
    spec = pod["spec"]
    if spec.get("automountServiceAccountToken") is False:
        return pod
    volumes = spec.setdefault("volumes", [])
    existing = [v["name"] for v in volumes if v["name"].startswith("kube-api-access-")]
    name = existing[0] if existing else "kube-api-access-x7k2q"
    needed = False
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        mounts = container.setdefault("volumeMounts", [])
        if not any(m["mountPath"] == TOKEN_PATH for m in mounts):
            mounts.append({"name": name, "readOnly": True, "mountPath": TOKEN_PATH})
            needed = True
    if needed and not existing:
        volumes.append({"name": name, "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}})
    return pod


def webhook(pod: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    result = review_admission(json.dumps(admission_review(pod, "serving")).encode(), settings=Settings())
    assert result.status == 200
    assert result.body["response"]["allowed"], result.body
    patch = decode_patch(result.body)
    return jsonpatch.apply_patch(pod, patch), patch


def golden_pod(name: str) -> dict[str, Any]:
    pod: dict[str, Any] = json.loads((CASES / name / "review.json").read_text())["request"]["object"]
    return pod


@pytest.mark.parametrize("case", ["hf-basic", "s3-with-secret", "existing-volumes-init-containers-env"])
def test_the_apiservers_second_service_account_pass_changes_nothing_so_no_second_review(case: str) -> None:
    created = service_account_plugin(golden_pod(case))  # what the webhook is sent
    mutated, patch = webhook(created)
    assert patch
    again = service_account_plugin(mutated)  # the reinvoked built-in plugins
    assert again == mutated  # unchanged: the apiserver does not call our webhook again
    (fetcher,) = [c for c in again["spec"]["initContainers"] if c["name"] == wire.FETCHER_CONTAINER_NAME]
    token_mounts = [m for m in fetcher["volumeMounts"] if m["mountPath"] == TOKEN_PATH]
    assert [m["name"] for m in token_mounts] == [wire.NO_TOKEN_VOLUME_NAME]
    assert token_mounts[0]["readOnly"] is True
    (volume,) = [v for v in again["spec"]["volumes"] if v["name"] == wire.NO_TOKEN_VOLUME_NAME]
    assert set(volume) == {"name", "emptyDir"}  # an empty directory: no token, no CA, no namespace file


def test_the_app_containers_keep_the_token_the_pod_asked_for() -> None:
    created = service_account_plugin(golden_pod("hf-basic"))
    mutated, _ = webhook(created)
    for container in mutated["spec"]["containers"]:
        assert any(m["name"].startswith("kube-api-access-") for m in container["volumeMounts"])


def test_a_pod_without_a_token_still_gets_none_in_the_fetcher() -> None:
    pod = golden_pod("hf-basic")
    pod["spec"]["automountServiceAccountToken"] = False
    mutated, _ = webhook(service_account_plugin(pod))
    assert service_account_plugin(mutated) == mutated
    assert not [v for v in mutated["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]


def test_a_web_identity_that_uses_the_service_account_token_keeps_it_in_the_fetcher() -> None:
    """AWS_WEB_IDENTITY_TOKEN_FILE under the token path (a cluster OIDC issuer trusted by IAM): the fetcher needs it."""
    pod = service_account_plugin(golden_pod("s3-irsa-env-copied"))
    (app,) = pod["spec"]["containers"]
    for item in app["env"]:
        if item["name"] == "AWS_WEB_IDENTITY_TOKEN_FILE":
            item["value"] = TOKEN_PATH + "/token"
    mutated, _ = webhook(pod)
    (fetcher,) = mutated["spec"]["initContainers"]
    paths = [m["mountPath"] for m in fetcher["volumeMounts"]]
    assert paths.count(TOKEN_PATH) == 1
    assert next(m for m in fetcher["volumeMounts"] if m["mountPath"] == TOKEN_PATH)["name"].startswith("kube-api")
