"""Warm-up lists: the models every matching node's own cache fetches before any pod asks (node-local mode).

Two places name them: the setting ``MODELCACHE_WARM_UP`` (Helm ``nodeLocal.warmUp``), a JSON list of
``{"source": ..., "include": [...], "nodeSelector": {...}}``, and CachedModel objects with
``spec.nodeSelector``. The cache agent on each node keeps the ones whose node selector matches its
node's labels (no selector: every node) in a file it shares with the ``warm`` container of its pod,
which fetches them with the fetcher and keeps them ready. Standard library only: both images read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modelcache.contract.errors import ContractError, show_value

MAX_WARM_MODELS = 64
WARM_UP_SETTING = "MODELCACHE_WARM_UP"
EXAMPLE = '[{"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "nodeSelector": {"nvidia.com/gpu.present": "true"}}]'


class WarmUpError(ValueError):
    """A warm-up list that is not one; the message names the entry and what to write instead."""


@dataclass(frozen=True, slots=True)
class WarmModel:
    """One model to keep on a node: its source and include patterns, as the annotations name them."""

    source: str
    include: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The model key on the volume (the source was checked when the list was read)."""
        from modelcache.contract.keys import model_key
        from modelcache.contract.sources import parse_source

        return model_key(parse_source(self.source, allow_http=False), self.include)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """A node selector matches a node that has every one of its labels with that value."""
        return all(labels.get(name) == value for name, value in self.node_selector.items())

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "include": list(self.include)}


def parse_warm_up(text: str, *, what: str = WARM_UP_SETTING) -> tuple[WarmModel, ...]:
    """Read a warm-up list; WarmUpError names the entry and what is wrong with it (and the source's own
    error, which follows the modelcache.io/model annotation's grammar)."""
    from modelcache.contract.annotation import ANNOTATION_PREFIX, parse_include
    from modelcache.contract.sources import parse_source

    def refuse(reason: str) -> WarmUpError:
        return WarmUpError(
            f"{what} is invalid: {reason}. Expected a JSON list of {{source, include, nodeSelector}}, "
            f"for example {EXAMPLE}"
        )

    try:
        items = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as err:
        raise refuse(f"it is not JSON ({err.msg} at character {err.pos})") from err
    if not isinstance(items, list) or len(items) > MAX_WARM_MODELS:
        raise refuse(f"it is not a list of at most {MAX_WARM_MODELS} models")
    models = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict) or not isinstance(item.get("source"), str) or set(item) - _FIELDS:
            raise refuse(f"entry {number} is not an object with a source (and only include, nodeSelector)")
        include, selector = item.get("include") or [], item.get("nodeSelector") or {}
        if not isinstance(include, list) or not all(isinstance(p, str) for p in include):
            raise refuse(f"entry {number}: include is not a list of glob patterns")
        if not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values()):
            raise refuse(f"entry {number}: nodeSelector is not a map of label names to values")
        try:
            source = parse_source(item["source"], allow_http=False)
            patterns = parse_include(",".join(include)) if include else ()
        except ContractError as err:
            field_name = err.annotation.removeprefix(ANNOTATION_PREFIX)
            raise refuse(f"entry {number}: {field_name} {show_value(err.value)}: {err.problem}") from err
        models.append(WarmModel(source.uri, patterns, dict(selector)))
    return tuple(models)


_FIELDS = {"source", "include", "nodeSelector"}


def from_cached_model(obj: Mapping[str, object]) -> WarmModel | None:
    """The warm-up a CachedModel asks for with spec.nodeSelector (None: it asks for none, or is invalid)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("nodeSelector"), dict):
        return None
    item = {"source": spec.get("source"), "include": spec.get("include") or [], "nodeSelector": spec["nodeSelector"]}
    try:
        (model,) = parse_warm_up(json.dumps([item]), what=f"CachedModel {_name(obj)}")
    except WarmUpError:
        return None  # the controller tells the object's owner (an InvalidSource Event)
    return model


def _name(obj: Mapping[str, object]) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("name", "?")) if isinstance(metadata, dict) else "?"


def for_node(models: Sequence[WarmModel], labels: Mapping[str, str]) -> list[WarmModel]:
    """The models of `models` this node keeps, each once, in the order given."""
    chosen: dict[tuple[str, tuple[str, ...]], WarmModel] = {}
    for model in models:
        if model.matches(labels):
            chosen.setdefault((model.source, model.include), model)
    return list(chosen.values())


def dump_list(models: Sequence[WarmModel], *, node: str) -> str:
    """The file the agent writes for the warm container: this node's models."""
    return json.dumps({"node": node, "models": [m.to_json() for m in models]}, indent=1, sort_keys=True)


def load_list(text: str) -> tuple[WarmModel, ...]:
    """Read the agent's file (ValueError when it is not one)."""
    try:
        document = json.loads(text)
        return parse_warm_up(json.dumps(document["models"]), what="the warm-up list file")
    except (KeyError, TypeError, json.JSONDecodeError, WarmUpError) as err:
        raise ValueError(f"not a warm-up list file: {err}") from err
