"""Our CustomResourceDefinitions as the apiserver applies them, for the API stand-in (devtools/kubeapi.py).

The CRDs are read from manifests/base/*-crd.yaml, so the stand-in serves exactly what we install. For
each object written: defaults from the schema are filled in, then the object is checked against the
structural schema (types, required fields, enums, lengths, patterns), the uniqueness of the keys of
``x-kubernetes-list-type: map`` lists, and the ``x-kubernetes-validations`` CEL rules, transition rules
(``oldSelf``) on updates only. One thing is stricter than the apiserver: a field the schema does not
declare is refused, where the apiserver would drop it without a word; our code must never write one.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelcache.contract import JsonObject

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests" / "base"


class SchemaError(ValueError):
    """The object breaks its CRD's schema; the message says where and how."""


@dataclass(frozen=True)
class CustomResource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    schema: JsonObject
    status_subresource: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def admit(self, obj: JsonObject, old: JsonObject | None) -> JsonObject:
        """The object as stored: defaults applied, then checked (raises SchemaError)."""
        obj = copy.deepcopy(obj)
        _default(self.schema, obj)
        _check(self.schema, obj, old, "")
        return obj


@functools.cache
def custom_resources() -> dict[tuple[str, str], CustomResource]:
    """(group, plural) -> the served version of every CRD under manifests/base/."""
    found = {}
    for path in sorted(MANIFESTS.glob("*-crd.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        version = next(v for v in spec["versions"] if v.get("storage"))
        found[spec["group"], spec["names"]["plural"]] = CustomResource(
            group=spec["group"],
            version=version["name"],
            plural=spec["names"]["plural"],
            kind=spec["names"]["kind"],
            namespaced=spec["scope"] == "Namespaced",
            schema=version["schema"]["openAPIV3Schema"],
            status_subresource="status" in (version.get("subresources") or {}),
        )
    return found


def _default(schema: JsonObject, value: Any) -> None:
    if not isinstance(value, dict):
        if isinstance(value, list) and "items" in schema:
            for item in value:
                _default(schema["items"], item)
        return
    for name, sub in (schema.get("properties") or {}).items():
        if name not in value and "default" in sub:
            value[name] = copy.deepcopy(sub["default"])
        if name in value:
            _default(sub, value[name])


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _check(schema: JsonObject, value: Any, old: Any, where: str) -> None:
    kind = schema.get("type")
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(f"{where or '.'}: expected an integer, got {value!r}")
    elif kind in _TYPES and not isinstance(value, _TYPES[kind]):
        raise SchemaError(f"{where or '.'}: expected {kind}, got {type(value).__name__} {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{where}: {value!r} is not one of {schema['enum']}")
    _check_bounds(schema, value, where)
    if isinstance(value, dict) and where != ".metadata":
        properties = schema.get("properties")
        if properties is not None:
            unknown = sorted(set(value) - set(properties))
            if unknown:
                raise SchemaError(f"{where or '.'}: unknown field(s) {unknown} (the apiserver would drop them)")
            for name in schema.get("required", []):
                if name not in value:
                    raise SchemaError(f"{where}.{name}: Required value")
            for name, sub in properties.items():
                if name in value:
                    before = old.get(name) if isinstance(old, dict) else None
                    _check(sub, value[name], before, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        keys = schema.get("x-kubernetes-list-map-keys")
        if keys:
            seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
            if len(seen) != len(set(seen)):
                raise SchemaError(f"{where}: duplicate entries for the map keys {keys}")
        for index, item in enumerate(value):
            _check(schema["items"], item, None, f"{where}[{index}]")
    _check_rules(schema, value, old, where)


def _check_bounds(schema: JsonObject, value: Any, where: str) -> None:
    import re

    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
            raise SchemaError(
                f"{where}: length {len(value)} is outside {schema.get('minLength', 0)}..{schema.get('maxLength')}"
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaError(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, list) and len(value) > schema.get("maxItems", len(value)):
        raise SchemaError(f"{where}: {len(value)} items, at most {schema['maxItems']}")
    if isinstance(value, int) and not isinstance(value, bool) and value < schema.get("minimum", value):
        raise SchemaError(f"{where}: {value} is below the minimum {schema['minimum']}")


def _check_rules(schema: JsonObject, value: Any, old: Any, where: str) -> None:
    import celpy
    from celpy.adapter import json_to_cel

    for rule in schema.get("x-kubernetes-validations") or []:
        if "oldSelf" in rule["rule"] and old is None:
            continue  # a transition rule: only when there is an old value
        environment = celpy.Environment()
        program = environment.program(environment.compile(rule["rule"]))
        activation = {"self": json_to_cel(value)} | ({"oldSelf": json_to_cel(old)} if old is not None else {})
        if not bool(program.evaluate(activation)):
            raise SchemaError(f"{where}: {rule.get('message') or rule['rule']}")
