"""The cache agent's settings: a frozen dataclass read once from MODELCACHE_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from modelcache.cache.purge import read_watermark
from modelcache.contract.annotation import DNS_LABEL, DNS_SUBDOMAIN
from modelcache.contract.volumes import VOLUME_MODES, VolumeMode
from modelcache.contract.warmup import WarmModel, parse_warm_up
from modelcache.contract.wire import CACHE_ROOT_ENV
from modelcache.runtime.logs import FORMATS, LEVELS
from modelcache.runtime.settings import (
    Reader,
    load_settings,
    read_boolean,
    read_choice,
    read_duration,
    read_name,
    read_port,
    read_text,
)
from modelcache.runtime.timings import LeaseTimings


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """Everything the agent can be told; each field is MODELCACHE_<FIELD NAME IN UPPER CASE>."""

    cache_root: str = ""  # the cache PVC's mount path (required)
    cache_claim: str = "modelcache"  # that PVC's name, in `namespace`: how CachedModel entries name the volume
    cached_models: bool = True  # keep this volume's entries of the CachedModel objects (needs their CRD)
    volume_mode: VolumeMode = "existing"  # the controller's: how a namespace's pods get their cache volume
    namespace: str = "modelcache-system"  # its own namespace: where its Lease lives
    # The node whose node-local cache this agent keeps (a DaemonSet sets spec.nodeName): then it takes no
    # Lease (it is the only agent of that directory), asks only for the pods on its node, names its
    # CachedModel entries node:<name>, labels its metrics with the node, and keeps its node's warm-up list.
    node_name: str = ""
    warm_up: tuple[WarmModel, ...] = ()  # MODELCACHE_WARM_UP: a JSON list (modelcache/contract/warmup.py)
    warm_up_file: str = ""  # where this node's warm-up list goes for the warm container ("" none)
    identity: str = ""  # its name in the Lease (the pod name); the host name when empty
    lease_name: str = "modelcache-cache-agent"
    # client-go's leader election durations: a candidate takes over a Lease whose record has not changed
    # for lease_duration of its own time; the leader stops acting after lease_renew_deadline without a
    # successful renewal; both try every lease_retry_period.
    lease_duration: timedelta = timedelta(seconds=15)
    lease_renew_deadline: timedelta = timedelta(seconds=10)
    lease_retry_period: timedelta = timedelta(seconds=2)
    check_unused_cached_models_every: timedelta = timedelta(days=1)
    purge_unused_cached_models_after: timedelta = timedelta(weeks=1)
    purge_min_free: str = ""  # watermark: "50Gi", "10%"; "" for none
    purge_dry_run: bool = False  # log what a round would remove, remove nothing
    staging_after: timedelta = timedelta(days=1)  # dead download attempts older than this go
    outcomes_after: timedelta = timedelta(weeks=1)  # outcome records older than this go
    scan_every: timedelta = timedelta(minutes=1)  # metrics and CachedModel refresh
    pods_namespace: str = ""  # ask only this namespace for live pods ("" all: a cache shared by many)
    metrics_port: int = 8080
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AgentSettings:
        """Read and validate every MODELCACHE_* variable; one SettingsError lists every problem."""
        settings = load_settings(cls, _READERS, environ, what="cache agent")
        return settings if settings.identity else replace(settings, identity=os.uname().nodename)

    @property
    def lease_timings(self) -> LeaseTimings:
        return LeaseTimings.of(self.lease_duration, self.lease_renew_deadline, self.lease_retry_period)

    def problems(self) -> list[str]:
        """Cross-field checks (load_settings runs them)."""
        problems = self.lease_timings.problems()
        if not self.cache_root:
            problems.append(f"{CACHE_ROOT_ENV} is required: the mount path of the cache PVC")
        elif not Path(self.cache_root).is_dir():
            problems.append(f"{CACHE_ROOT_ENV}={self.cache_root!r} is not a directory: mount the cache PVC there")
        if (self.warm_up or self.warm_up_file) and not self.node_name:
            problems.append(
                "MODELCACHE_WARM_UP and MODELCACHE_WARM_UP_FILE are for node-local caches: set MODELCACHE_NODE_NAME "
                "(the DaemonSet sets it from spec.nodeName)"
            )
        return problems


def _watermark(value: str) -> str:
    read_watermark(value, capacity=100)  # the same check the round makes, against the volume's size
    return value


_READERS: dict[str, Reader[Any]] = {
    "cache_root": read_text,
    "cache_claim": read_name(DNS_SUBDOMAIN, "a PersistentVolumeClaim name", limit=253),
    "cached_models": read_boolean,
    "volume_mode": read_choice(*VOLUME_MODES),
    "namespace": read_name(DNS_LABEL, "a namespace name", limit=63),
    "node_name": read_name(DNS_SUBDOMAIN, "a node name", limit=253, empty=True),
    "warm_up": Reader("text", parse_warm_up),
    "warm_up_file": read_text,
    "identity": read_text,
    "lease_name": read_name(DNS_SUBDOMAIN, "a Lease name", limit=253),
    "lease_duration": read_duration(minimum=1.0),
    "lease_renew_deadline": read_duration(minimum=0.5),
    "lease_retry_period": read_duration(minimum=0.1),
    "check_unused_cached_models_every": read_duration(),
    "purge_unused_cached_models_after": read_duration(),
    "purge_min_free": Reader("size", _watermark),
    "purge_dry_run": read_boolean,
    "staging_after": read_duration(),
    "outcomes_after": read_duration(),
    "scan_every": read_duration(),
    "pods_namespace": read_name(DNS_LABEL, "a namespace name", limit=63, empty=True),
    "metrics_port": read_port,
    "log_format": read_choice(*FORMATS),
    "log_level": read_choice(*LEVELS),
}

MEANINGS = {
    "cache_root": "where the cache PVC is mounted (required; /cache in the manifests)",
    "cache_claim": "the name of that PVC (in its own namespace): CachedModel status entries name it namespace/claim",
    "cached_models": "keep a CachedModel object for every model on the volume, and its entry for this volume",
    "volume_mode": "the controller's MODELCACHE_VOLUME_MODE: maps the namespaces a CachedModel names to volumes",
    "namespace": "its own namespace, where its Lease is (the manifests set it from the pod)",
    "node_name": "node-local caches: the node it runs on (spec.nodeName); no Lease, its node's pods, node metrics",
    "warm_up": "node-local: JSON list of {source, include, nodeSelector} every matching node keeps ready",
    "warm_up_file": "node-local: where it writes its node's warm-up list for the warm container",
    "identity": "its name in the Lease, before a unique suffix (the manifests set the pod name)",
    "lease_name": "the Lease: one replica acts at a time",
    "lease_duration": "a standby takes over a Lease whose record has not changed this long on its own clock",
    "lease_renew_deadline": "the leader stops acting after this long without a successful renewal",
    "lease_retry_period": "how often candidates try and the leader renews",
    "check_unused_cached_models_every": "MLIS's checkUnusedCachedModelsEvery: time between two purge rounds",
    "purge_unused_cached_models_after": "MLIS's purgeUnusedCachedModelsAfter: a model no live pod used this long goes",
    "purge_min_free": "watermark: below this free space (50Gi, or 10% of the volume) unused models go early, LRU first",
    "purge_dry_run": "log each round's decisions; remove nothing",
    "staging_after": "download attempts with no progress for this long are removed",
    "outcomes_after": "fetch outcome records older than this are removed",
    "scan_every": "how often the metrics and the CachedModel objects are refreshed",
    "pods_namespace": "ask only this namespace for live pods: for a volume no other namespace mounts",
    "metrics_port": "GET /metrics (Prometheus) and GET /healthz",
    "log_format": "text or json (one object per line)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}


def help_text() -> str:
    """`modelcache agent --help`."""
    from modelcache.runtime.settings import help_text as render

    return render(
        AgentSettings,
        _READERS,
        MEANINGS,
        intro="usage: modelcache agent   (or python -m modelcache.agent)\n\nThe cache agent: purges models no live pod "
        "used for a while, on a schedule, and serves the cache's metrics, under a Lease, beside one cache volume.",
    )
