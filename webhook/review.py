"""The AdmissionReview v1 wire format: parse a request, build a response.

Only what we need is read, and every field is type-checked: the port is reachable from every pod in the
cluster, so the body is untrusted input. Malformed input raises :class:`ReviewError` (HTTP 400).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import orjson

from modelcache.contract import JsonObject
from webhook.errors import ReviewError

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
MAX_BODY_BYTES = 7 * 1024 * 1024  # two objects of ~3 MB plus overhead, as controller-runtime reasons
MAX_WARNING_LENGTH = 120  # longer warnings may be cut by the apiserver

PatchOp = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """The parts of ``request`` we use."""

    uid: str
    group: str
    version: str
    kind: str
    resource: str
    sub_resource: str
    operation: str
    namespace: str
    name: str
    dry_run: bool
    object: JsonObject | None

    @property
    def is_pod_create(self) -> bool:
        return (
            self.operation == "CREATE"
            and (self.group, self.version, self.kind) == ("", "v1", "Pod")
            and self.resource == "pods"
            and not self.sub_resource
            and self.object is not None
        )


def parse_review(body: bytes) -> AdmissionRequest:
    """Decode an AdmissionReview v1 request body."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as err:  # also raised for nesting deeper than 1024 and bad UTF-8
        raise ReviewError(f"the body is not JSON: {err}") from err
    if not isinstance(review, dict):
        raise ReviewError("the body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise ReviewError(
            f"expected apiVersion {API_VERSION} and kind {KIND}, got "
            f"{_short(review.get('apiVersion'))} and {_short(review.get('kind'))}; "
            "set admissionReviewVersions: [v1] in the webhook configuration"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("the AdmissionReview has no request object")
    kind = _field(request, "kind", dict)
    obj = request.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise ReviewError("request.object is not a JSON object")
    return AdmissionRequest(
        uid=_field(request, "uid", str),
        group=_field(kind, "group", str, default=""),
        version=_field(kind, "version", str),
        kind=_field(kind, "kind", str),
        resource=_field(_field(request, "resource", dict), "resource", str),
        sub_resource=_field(request, "subResource", str, default=""),
        operation=_field(request, "operation", str),
        namespace=_field(request, "namespace", str, default=""),
        name=_field(request, "name", str, default=""),
        dry_run=_field(request, "dryRun", bool, default=False),
        object=obj,
    )


def _field(container: JsonObject, name: str, kind: type[Any], *, default: Any = None) -> Any:
    value = container.get(name)
    if value is None:
        value = default
    if value is None:
        raise ReviewError(f"the request has no {name}")
    if not isinstance(value, kind):
        raise ReviewError(f"{name} is a {type(value).__name__}, expected a {kind.__name__}")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def allowed(uid: str, *, warnings: tuple[str, ...] = (), audit: dict[str, str] | None = None) -> JsonObject:
    """Admit unchanged."""
    return _review(uid, {"allowed": True}, warnings, audit)


def patched(
    uid: str, patch: list[PatchOp], *, warnings: tuple[str, ...] = (), audit: dict[str, str] | None = None
) -> JsonObject:
    """Admit with a JSON Patch; an empty patch admits unchanged (patch and patchType go together)."""
    if not patch:
        return allowed(uid, warnings=warnings, audit=audit)
    encoded = base64.b64encode(orjson.dumps(patch)).decode("ascii")
    return _review(uid, {"allowed": True, "patchType": "JSONPatch", "patch": encoded}, warnings, audit)


def denied(
    uid: str,
    message: str,
    *,
    code: int = 400,
    warnings: tuple[str, ...] = (),
    audit: dict[str, str] | None = None,
) -> JsonObject:
    """Refuse the pod with a message its author can act on."""
    status = {"code": code, "message": message, "reason": "BadRequest" if code == 400 else "Forbidden"}
    return _review(uid, {"allowed": False, "status": status}, warnings, audit)


def _review(uid: str, response: JsonObject, warnings: tuple[str, ...], audit: dict[str, str] | None) -> JsonObject:
    response = {"uid": uid, **response}
    if warnings:
        response["warnings"] = [clip_warning(w) for w in warnings]
    if audit:
        response["auditAnnotations"] = audit
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def clip_warning(text: str) -> str:
    """Keep a warning within the length the apiserver passes on intact."""
    return text if len(text) <= MAX_WARNING_LENGTH else text[: MAX_WARNING_LENGTH - 3] + "..."


def decode_patch(review: JsonObject) -> list[PatchOp]:
    """The JSON Patch of a response (empty when there is none); used by the demo and the tests."""
    encoded = review["response"].get("patch")
    return [] if encoded is None else list(json.loads(base64.b64decode(encoded)))
