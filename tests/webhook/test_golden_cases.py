"""Golden AdmissionReview cases: tests/webhook/cases/<name>/{review.json,expected.json}.

Each case runs the real decision code on a review, compares the answer with the reviewed golden file,
and, when the pod is mutated, checks what a cluster would: the patch applies to the raw object, the
result is a valid Pod for Kubernetes 1.30 and the newest schema we know, the injected init container
passes Pod Security "restricted" and OpenShift restricted-v2 on its own, and a second pass (the
apiserver's reinvocation) adds nothing. UPDATE_GOLDEN=1 rewrites the golden files; review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from devtools.admission import admission_review
from modelcache.contract import wire
from tests.pod_security import openshift_restricted_v2_violations
from webhook.config import Settings
from webhook.handlers import review_admission
from webhook.review import decode_patch

CASES = Path(__file__).parent / "cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "review.json").exists())
SCHEMA_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
SETTINGS = Settings(fetcher_image="registry.example.com/modelcache-fetcher:0.1.0")


def run(review: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    result = review_admission(json.dumps(review).encode(), settings=SETTINGS)
    return result.status, result.body


def summary(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """What the golden file records: status, decision, message, warnings and the decoded patch."""
    if status != 200:
        return {"http_status": status, "error": body["error"]}
    response = body["response"]
    out: dict[str, Any] = {"http_status": status, "allowed": response["allowed"]}
    if not response["allowed"]:
        out["message"] = response["status"]["message"]
    if response.get("warnings"):
        out["warnings"] = response["warnings"]
    out["patch"] = decode_patch(body)
    return out


def validate_pod(pod: dict[str, Any]) -> None:
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case_matches_golden_answer(name: str) -> None:
    review = json.loads((CASES / name / "review.json").read_text())
    status, body = run(review)
    if status == 200:
        assert body["apiVersion"] == "admission.k8s.io/v1"
        assert body["kind"] == "AdmissionReview"
        assert body["response"]["uid"] == review["request"]["uid"]
        assert ("patch" in body["response"]) == ("patchType" in body["response"])
        assert all(len(w) <= 120 for w in body["response"].get("warnings", []))
    got = summary(status, body)
    golden = CASES / name / "expected.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=2) + "\n")
    assert got == json.loads(golden.read_text())


@pytest.mark.parametrize("name", CASE_NAMES)
def test_mutated_pod_is_valid_restricted_and_idempotent(name: str) -> None:
    review = json.loads((CASES / name / "review.json").read_text())
    pod = review["request"]["object"]
    if review["request"]["kind"]["kind"] != "Pod":
        pytest.skip("not a pod")
    validate_pod(pod)  # the fixture itself is a valid pod
    status, body = run(review)
    patch = decode_patch(body) if status == 200 else []
    if not patch:
        return
    mutated = jsonpatch.apply_patch(pod, patch)
    validate_pod(mutated)
    fetchers = [c for c in mutated["spec"]["initContainers"] if c["name"] == wire.FETCHER_CONTAINER_NAME]
    assert len(fetchers) == 1
    assert openshift_restricted_v2_violations(mutated, fetchers[0]) == []
    assert fetchers[0]["resources"]["requests"]
    assert fetchers[0]["resources"]["limits"]
    again_status, again = run(admission_review(mutated, review["request"]["namespace"]))
    assert again_status == 200
    assert again["response"]["allowed"] is True
    assert decode_patch(again) == []


@pytest.mark.parametrize("name", CASE_NAMES)
def test_dry_run_gets_the_same_answer(name: str) -> None:
    review = json.loads((CASES / name / "review.json").read_text())
    dry = json.loads(json.dumps(review))
    dry["request"]["dryRun"] = not review["request"].get("dryRun", False)
    assert summary(*run(dry)) == summary(*run(review))
