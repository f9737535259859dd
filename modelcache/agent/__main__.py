"""`modelcache agent` (and `python -m modelcache.agent`): the cache agent, until SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from modelcache.agent.config import AgentSettings, help_text
from modelcache.agent.loop import Agent
from modelcache.agent.warmup import NodeWarmUp
from modelcache.contract.pods import PodRef
from modelcache.contract.quantities import format_duration
from modelcache.runtime import httpd
from modelcache.runtime.logs import configure_logging
from modelcache.runtime.settings import SettingsError, answer_help

log = logging.getLogger("modelcache.agent")


def run(settings: AgentSettings) -> int:
    """Run the agent with these settings until SIGTERM."""
    agent = make_agent(settings)

    def on_term(signum: int, _: FrameType | None) -> None:
        log.info("signal %d: finishing the current removal, releasing the Lease", signum)
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def health() -> tuple[int, str, bytes]:
        healthy = time.monotonic() - agent.alive_at < 60
        return (200, httpd.TEXT, b"ok\n") if healthy else (503, httpd.TEXT, b"stuck\n")

    prepare_volume_root(Path(settings.cache_root))
    httpd.serve(settings.metrics_port, {"/healthz": health, "/metrics": agent.metrics.exposition})
    log.info(
        "modelcache cache agent %s on %s%s: purge every %s, unused after %s%s%s; pods %s; metrics on :%d",
        settings.identity,
        settings.cache_root,
        f" (the node-local cache of node {settings.node_name})" if settings.node_name else "",
        format_duration(settings.check_unused_cached_models_every.total_seconds()),
        format_duration(settings.purge_unused_cached_models_after.total_seconds()),
        f", keep {settings.purge_min_free} free" if settings.purge_min_free else "",
        " (dry run)" if settings.purge_dry_run else "",
        _pods_text(settings),
        settings.metrics_port,
    )
    agent.run()
    return 0


def _pods_text(settings: AgentSettings) -> str:
    where = f"on node {settings.node_name}, " if settings.node_name else ""
    return where + (f"in namespace {settings.pods_namespace}" if settings.pods_namespace else "in all namespaces")


def make_agent(settings: AgentSettings) -> Agent:
    """The agent beside a shared volume (under a Lease), or beside its node's own cache (alone there)."""
    from modelcache.contract import cachedmodel
    from modelcache.runtime.kube import connect, live_pods_by_key
    from modelcache.runtime.leader import LeaderElector

    api = connect()
    node = settings.node_name
    elector = None  # a node's own cache has one agent, its DaemonSet pod: no Lease
    if not node:
        elector = LeaderElector(
            api,
            namespace=settings.namespace,
            name=settings.lease_name,
            identity=settings.identity,
            timings=settings.lease_timings,
        )
    cached_models, declared = None, None
    if settings.cached_models:
        from modelcache.agent.cachedmodels import CachedModels, declared_users

        if node:
            cached_models = CachedModels(api, volume=cachedmodel.node_volume_id(node), mode="node-local")
        else:
            volume = cachedmodel.volume_id(settings.namespace, settings.cache_claim)
            cached_models = CachedModels(api, volume=volume, mode=settings.volume_mode)
        declared = declared_users
    warm_up = NodeWarmUp(api, settings, cached_models) if node else None

    def kept() -> dict[str, list[PodRef]]:
        """Besides live pods, the purge keeps the models someone declared as CachedModels (listed afresh:
        one declared a moment ago counts) and this node's warm-up list."""
        found = declared(api) if declared is not None else {}
        for key, refs in (warm_up.users() if warm_up is not None else {}).items():
            found.setdefault(key, []).extend(refs)
        return found

    return Agent(
        settings,
        elector=elector,
        live_pods=lambda: live_pods_by_key(api, settings.pods_namespace, node=node),  # on this node, for its cache
        kept=kept,
        cached_models=cached_models,
        warm_up=warm_up.models if warm_up is not None else None,
    )


def prepare_volume_root(root: Path) -> None:
    """Open the volume root to fetchers of every UID if this agent may (it owns it); else say what to do.

    The agent runs as a non-root UID with no capabilities, like everything we run: it changes the mode
    only of a root it owns, never by privilege. /metrics shows the state as modelcache_cache_root_open.
    """
    from modelcache.cache.permissions import PathFacts, prepare_root, whoami

    try:
        log.info("%s", prepare_root(root))
    except OSError as err:
        log.warning(
            "the cache volume root %s is not writable for every UID, and this agent (%s) may not change it (%s): "
            "fetchers that do not run as its owner fail with CacheNotWritable (exit 10). Prepare it once "
            '(docs/install.md, "Prepare the volume")',
            PathFacts.of(root).text(),
            whoami(),
            err.strerror,
        )


def main(argv: list[str] | None = None) -> int:
    """Read the settings, set up logging, run."""
    answered = answer_help(sys.argv[1:] if argv is None else argv, help_text, program="python -m modelcache.agent")
    if answered is not None:
        return answered
    try:
        settings = AgentSettings.from_env(os.environ)
    except SettingsError as err:
        print(err, file=sys.stderr)  # noqa: T201 (logging is not configured yet)
        return 2
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
