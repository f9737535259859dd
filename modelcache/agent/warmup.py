"""A node's warm-up list, as its cache agent keeps it (modelcache/contract/warmup.py says what it is).

The agent on each node reads its node's labels and the CachedModel objects that ask for warm-up
(spec.nodeSelector), adds the models of MODELCACHE_WARM_UP, keeps those whose node selector matches,
and writes them at every scan to the file the ``warm`` container of its pod reads. The purge keeps them:
they count as users of their model, as declared CachedModels do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelcache.agent.config import AgentSettings
from modelcache.contract import cachedmodel
from modelcache.contract.pods import PodRef
from modelcache.contract.warmup import WarmModel, for_node, from_cached_model

if TYPE_CHECKING:
    from modelcache.agent.cachedmodels import CachedModels
    from modelcache.runtime.kube import Kube

WARM_UP = "(warm-up)"  # the namespace of the pseudo-users that stand for the warm-up list in the purge


class NodeWarmUp:
    """The warm-up list of the node this agent runs on."""

    def __init__(self, api: Kube, settings: AgentSettings, cached_models: CachedModels | None = None) -> None:
        """`cached_models`: the agent's, whose sync lists the objects just before (one list per scan)."""
        self.api, self.settings, self.cached_models = api, settings, cached_models
        self.last: list[WarmModel] | None = None

    def models(self) -> list[WarmModel]:
        """The models this node keeps ready now (API errors propagate: the caller keeps the last list)."""
        from modelcache.runtime.kube import ApiError, path

        node = self.api.get(path("v1", "nodes", self.settings.node_name))
        labels = (node.get("metadata") or {}).get("labels") or {}
        declared: list[WarmModel] = []
        if self.settings.cached_models:
            listed = self.cached_models.listed if self.cached_models is not None else None
            if listed is None:
                try:
                    listed = self.api.get(path(cachedmodel.API_VERSION, cachedmodel.PLURAL)).get("items", [])
                except ApiError as err:
                    if err.status != 404:
                        raise
                    listed = []  # no CRD: the setting alone
            declared = [model for obj in listed if (model := from_cached_model(obj)) is not None]
        self.last = for_node([*self.settings.warm_up, *declared], labels)
        return self.last

    def users(self) -> dict[str, list[PodRef]]:
        """Model key -> a pseudo-user for each model of the list, so that no purge removes it."""
        models = self.models() if self.last is None else self.last
        users: dict[str, list[PodRef]] = {}
        for model in models:
            users.setdefault(model.key, []).append(PodRef(WARM_UP, model.source))
        return users
