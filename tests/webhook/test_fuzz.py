"""Fuzzing the admission path with hypothesis: no input yields HTTP 500 or an unhandled exception.

Three layers: arbitrary bytes, arbitrary JSON inside a valid envelope, and structurally valid pods with
hostile annotation values and container layouts, where every patch must also apply and be idempotent.
"""

from __future__ import annotations

import json
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.admission import admission_review
from modelcache.contract import annotation, wire
from webhook.config import Settings
from webhook.handlers import review_admission
from webhook.review import decode_patch

SETTINGS = Settings()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(body: bytes) -> None:
    result = review_admission(body, settings=SETTINGS)
    assert result.status in (200, 400)


@FUZZ
@given(json_values)
def test_arbitrary_json_objects_as_the_pod(obj: Any) -> None:
    review = admission_review({}, "ns")
    review["request"]["object"] = obj
    result = review_admission(json.dumps(review).encode(), settings=SETTINGS)
    assert result.status in (200, 400)


@FUZZ
@given(json_values)
def test_arbitrary_json_as_the_request(obj: Any) -> None:
    body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": obj}).encode()
    assert review_admission(body, settings=SETTINGS).status in (200, 400)


names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True) | st.sampled_from(
    [wire.FETCHER_CONTAINER_NAME, "vllm", "router"]
)
annotation_values = (
    st.text(max_size=60)
    | st.from_regex(r"(hf|s3|https)://[ -~]{0,40}", fullmatch=True)
    | st.sampled_from(["hf://Qwen/Qwen3-0.6B", "s3://models/x", "https://h/m.bin", "vllm", "/models", "8Gi"])
)
pod_annotation_maps = st.dictionaries(
    st.sampled_from([*sorted(annotation.KNOWN_ANNOTATIONS), "modelcache.io/other", "app"]),
    annotation_values,
    max_size=6,
).map(lambda a: {annotation.MODEL_ANNOTATION: "hf://Qwen/Qwen3-0.6B", **a})
env_entries = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from([wire.OPT_OUT_ENV, "HF_HUB_CACHE", wire.MODEL_PATH_ENV, "OTHER"]),
            "value": annotation_values,
        }
    ),
    max_size=3,
    unique_by=lambda e: e["name"],
)
containers = st.lists(
    st.builds(
        lambda name, env, mounts: {"name": name, "image": "busybox:1.37", "env": env, "volumeMounts": mounts},
        names,
        env_entries,
        st.lists(
            st.fixed_dictionaries({"name": st.just("data"), "mountPath": st.sampled_from(["/models", "/data"])}),
            max_size=1,
        ),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda x: x["name"],
)


@FUZZ
@given(pod_annotation_maps, containers, st.booleans())
def test_hostile_pods_are_denied_or_patched_correctly(
    pod_annotations: dict[str, str], pod_containers: list[dict[str, Any]], with_volumes: bool
) -> None:
    spec: dict[str, Any] = {"containers": pod_containers}
    if with_volumes:
        spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": pod_annotations}, "spec": spec}
    result = review_admission(json.dumps(admission_review(pod, "ns")).encode(), settings=SETTINGS)
    assert result.status == 200
    response = result.body["response"]
    if not response["allowed"]:
        assert response["status"]["message"].startswith("modelcache: ")
        return
    mutated = jsonpatch.apply_patch(pod, decode_patch(result.body))
    again = review_admission(json.dumps(admission_review(mutated, "ns")).encode(), settings=SETTINGS)
    assert again.status == 200
    assert decode_patch(again.body) == []
