"""`modelcache`: see, warm, refresh, verify and purge a model cache directory (and ask the cluster).

Runs wherever the cache volume is mounted (a debug pod, the cache agent, a CronJob, a node) with
``--cache DIR`` or MODELCACHE_CACHE_ROOT. Commands that need the cluster (live pods, Jobs) use the
pod's service account or the current kubeconfig context. Exit codes: 0 done, 1 something was found
wrong or refused (the output says what), 2 bad usage, 3 the cluster could not be asked (no access, or
the API is down: nothing was removed); a failed prefetch exits with the fetcher's code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from modelcache.cache.collection import Ages
from modelcache.cache.inventory import CacheEntry, Damage, free_space, list_models, model_keys, verify_model
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import Marker, read_marker
from modelcache.cache.owners import Identity
from modelcache.cache.pins import live_use, pods_of
from modelcache.cache.purge import PurgePolicy, Round, read_watermark, run_purge
from modelcache.cache.removal import RemovalCheck, RemovalRefusedError, remove_model, unready
from modelcache.cli.progress import Meter
from modelcache.contract.annotation import parse_include
from modelcache.contract.cachedmodel import name_for_key
from modelcache.contract.errors import ContractError, FetchError
from modelcache.contract.keys import check_model_key, model_key
from modelcache.contract.pods import PodRef
from modelcache.contract.quantities import format_bytes, format_duration
from modelcache.contract.sources import parse_source
from modelcache.contract.wire import (
    CACHE_ROOT_ENV,
    DEFAULT_FETCHER_IMAGE,
    NODE_NAME_ENV,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
)
from modelcache.runtime.logs import configure_logging
from modelcache.runtime.settings import SettingsError, read_seconds

log = logging.getLogger("modelcache")
DEFAULT_UNUSED_FOR = "1w"  # MLIS's purgeUnusedCacheEntrysAfter default
DEFAULT_STAGING_AFTER = "1d"
DEFAULT_OUTCOMES_AFTER = 7 * 86400.0
_PODS_NAMESPACE_HELP = "ask only this namespace for live pods: for a cache volume no other namespace mounts"


class UsageError(Exception):
    """Bad arguments: exit 2 with the message."""


class ClusterError(Exception):
    """The Kubernetes API could not be asked (no access, or it is down): exit 3; nothing was changed."""


EXIT_USAGE = 2
EXIT_CLUSTER = 3


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_format)
    try:
        code: int = args.run(args, out)
    except UsageError as err:
        sys.stderr.write(f"modelcache {args.command}: {err}\n")
        return EXIT_USAGE
    except ClusterError as err:
        sys.stderr.write(f"modelcache {args.command}: {err}\n")
        return EXIT_CLUSTER
    except FetchError as err:
        sys.stderr.write(f"modelcache {args.command}: {err.reason}: {err}\n")
        return err.exit_code
    return code


# --- ls -----------------------------------------------------------------------------------------------
def cmd_ls(args: argparse.Namespace, out: TextIO) -> int:
    if args.nodes:
        return _ls_nodes(out)
    layout = _layout(args)
    models = list_models(layout)
    pods = _live_pods(args) if args.pods else None
    if args.json:
        free, total = free_space(layout)
        document = {
            "cache": str(layout.root),
            "free_bytes": free,
            "total_bytes": total,
            "models": [_model_json(m, pods) for m in models],
        }
        json.dump(document, out, indent=1)
        out.write("\n")
        return 0
    now = time.time()
    heads = ["SOURCE", "STATE", "SIZE", "LAST USED", "VERSION", *(["PODS"] if pods is not None else []), "KEY"]
    rows = [[*heads, "CACHEDMODEL"]]
    for model in models:
        row = [
            model.source or "?",
            _state_text(model, now),
            format_bytes(model.size) if model.size else "-",
            f"{format_duration(now - model.last_used)} ago" if model.last_used else "never",
            model.version[:12] or "-",
        ]
        if pods is not None:
            row.append(", ".join(pods_of(pods, model.key)) or "-")
        rows.append([*row, model.key, name_for_key(model.key)])
    _table(rows, out)
    free, total = free_space(layout)
    out.write(f"{len(models)} model(s), {format_bytes(sum(m.size for m in models))}; ")
    out.write(f"free {format_bytes(free)} of {format_bytes(total)}\n")
    return 0


def _ls_nodes(out: TextIO) -> int:
    """Which nodes' own caches hold which models, from the CachedModel objects their agents keep."""
    from modelcache.cli.nodes import node_rows

    api = _api()
    try:
        rows = node_rows(api)
    except Exception as err:  # the client raises config, HTTP and API errors of several kinds
        raise ClusterError(
            f"cannot list the CachedModel objects ({type(err).__name__}: {str(err)[:300]}): `modelcache ls --nodes` "
            "reads them (their CRD installed, and cachedmodels list granted)"
        ) from err
    if len(rows) == 1:
        out.write("no node's own cache holds a model (node-local caches are off, or their agents have not reported)\n")
        return 0
    _table(rows, out)
    out.write(f"{len(rows) - 1} copies on {len({row[0] for row in rows[1:]})} node(s)\n")
    return 0


def cmd_warm(args: argparse.Namespace, out: TextIO) -> int:
    """Keep this node's warm-up list ready (the warm container of a node's cache agent pod)."""
    from modelcache.cli.nodes import cmd_warm as warm

    layout = _layout(args)
    _downloader()  # refuse at once where the fetcher's libraries are missing
    return warm(args, out, layout=layout, every=_duration(args.every, "--every"), fetch=_fetch)


def _state_text(model: CacheEntry, now: float) -> str:
    if model.state == "downloading" and model.download is not None:
        done = model.download.percent
        progress = f" {done}%" if done is not None else ""
        quiet = now - model.download.heartbeat_at if model.download.heartbeat_at else 0
        stale = f", no heartbeat for {format_duration(quiet)}" if quiet > 60 else ""
        return f"downloading{progress} ({model.download.holder}{stale})"
    if model.state == "interrupted":
        return f"interrupted ({format_bytes(model.staging_bytes)} staged)" if model.staging_bytes else "interrupted"
    if model.state == "corrupt":
        return f"corrupt: {model.problem}"
    return model.state


def _model_json(model: CacheEntry, pods: dict[str, list[PodRef]] | None) -> dict[str, Any]:
    data = asdict(model) | {"cachedmodel": name_for_key(model.key)}
    if pods is not None:
        data["pods"] = pods_of(pods, model.key)
    return data


# --- verify -------------------------------------------------------------------------------------------
def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    layout = _layout(args)
    keys = [_key(layout, value, args.include) for value in args.models] or [m.key for m in list_models(layout)]
    results: dict[str, list[Damage]] = {}  # key -> problems found
    for key in keys:
        marker = read_marker(layout, key)
        if marker is None:
            results[key] = [Damage("", "not ready: no ready marker (see `modelcache ls`)")]
            continue
        with Meter(f"verify {marker.source}", marker.total_bytes, stream=sys.stderr) as meter:
            results[key] = verify_model(layout, marker, progress=meter.add)
    bad = {key: problems for key, problems in results.items() if problems}
    repaired: dict[str, str] = {}  # key -> the fetcher's summary
    unrepaired: dict[str, str] = {}  # key -> why not
    cannot = _cannot_download() if args.repair and bad else None
    for key in bad if args.repair else ():
        marker = read_marker(layout, key)
        if cannot:  # nothing is touched (not even a model made unready) where nothing can be downloaded
            unrepaired[key] = f"not repaired: {cannot}"
            continue
        if marker is None:
            unrepaired[key] = "no ready marker says what it was: `modelcache prefetch <uri>` fetches it again"
            continue
        try:
            repaired[key] = _repair(layout, marker, [d.file for d in bad[key] if d.file], log_format=args.log_format)
        except (RemovalRefusedError, FetchError) as err:
            unrepaired[key] = f"not repaired: {err}"
    if args.json:
        document = {
            k: {"problems": [str(d) for d in v], "repaired": repaired.get(k), "not_repaired": unrepaired.get(k)}
            for k, v in results.items()
        }
        json.dump({"models": document}, out)
        out.write("\n")
    else:
        for key, problems in results.items():
            status = "ok" if not problems else ("repaired" if key in repaired else "CORRUPT")
            out.write(f"{status:9} {key}\n")
            for problem in problems:
                out.write(f"          {problem}\n")
            if key in repaired or key in unrepaired:
                out.write(f"          {repaired.get(key) or unrepaired[key]}\n")
    return 1 if any(k not in repaired for k in bad) else 0


def _repair(layout: CacheLayout, marker: Marker, damaged: list[str], *, log_format: str) -> str:
    if not damaged:  # only its links are wrong: published again from the files it has
        unready(layout, marker.key, identity=_identity("verify"))
        return _fetch(layout, marker.source, marker.include, refresh=False, log_format=log_format)
    # Replaced in place by verified copies: the model stays ready, no reader finds a file missing.
    return _download(log_format, marker.key, lambda local: local.repair(layout, marker, damaged))


# --- prefetch / refresh -------------------------------------------------------------------------------
def cmd_prefetch(args: argparse.Namespace, out: TextIO) -> int:
    refresh = args.command == "refresh"
    try:
        source = parse_source(args.uri, allow_http=args.allow_http)
        include = parse_include(",".join(args.include)) if args.include else ()
    except ContractError as err:
        raise UsageError(str(err)) from err
    if args.declare:
        return _declare(args, source, include, out)
    if args.job or args.apply:
        from modelcache.cli.jobs import create_job
        from modelcache.contract.prefetch import prefetch_job

        job = prefetch_job(
            source, namespace=args.namespace, image=args.image, include=include, secret=args.secret, refresh=refresh
        )
        if args.apply:
            api = _api()
            try:
                created = create_job(api, job)
            except Exception as err:  # the client raises config, HTTP and API errors of several kinds
                raise ClusterError(f"cannot create the Job ({type(err).__name__}: {str(err)[:300]})") from err
            out.write(created + "\n")
        else:
            json.dump(job, out, indent=2)
            out.write("\n")
        return 0
    layout = _layout(args)
    out.write(_fetch(layout, source.uri, include, refresh=refresh, log_format=args.log_format) + "\n")
    return 0


def _declare(args: argparse.Namespace, source: Any, include: tuple[str, ...], out: TextIO) -> int:
    """A CachedModel asking for the model in --namespace's cache: printed, or created with --apply."""
    from modelcache.contract import cachedmodel

    if args.command == "refresh":
        raise UsageError(
            "refresh --declare: a CachedModel fetches what is missing; to move a branch, use refresh --job"
        )
    obj = cachedmodel.declared(
        source.uri, model_key(source, include), include=include, namespaces=(args.namespace,), secret=args.secret
    )
    if not args.apply:
        json.dump(obj, out, indent=2)
        out.write("\n")
        return 0
    from modelcache.runtime.kube import ApiError, path

    name = obj["metadata"]["name"]
    try:
        _api().create(path(cachedmodel.API_VERSION, cachedmodel.PLURAL), obj)
    except ApiError as err:
        if err.status != 409:
            raise ClusterError(f"cannot create the CachedModel {name}: {err.status} {err.message}") from err
        out.write(f"cachedmodel/{name} exists already: `kubectl get cachedmodel {name}`\n")
        return 0
    except Exception as err:  # the client raises config and HTTP errors of several kinds
        raise ClusterError(f"cannot create the CachedModel {name} ({type(err).__name__}: {str(err)[:300]})") from err
    out.write(f"cachedmodel/{name} created: `kubectl wait --for=condition=Ready cachedmodel/{name}`\n")
    return 0


def _cannot_download() -> str | None:
    try:
        _downloader()
    except UsageError as err:
        return str(err)
    return None


def _fetch(layout: CacheLayout, uri: str, include: tuple[str, ...], *, refresh: bool, log_format: str) -> str:
    key = model_key(parse_source(uri, allow_http=True), include)
    return _download(log_format, key, lambda lf: lf.fetch(layout, uri, include, refresh=refresh))


def _download(log_format: str, key: str, work: Callable[[Any], str]) -> str:
    """The fetcher in this process: only where the fetcher's libraries are (its image, `pip install '.[cli]'`)."""
    localfetch = _downloader()
    _configure_logging(log_format, key=key)
    return work(localfetch)


def _downloader() -> Any:
    try:
        from modelcache.cli import localfetch
    except ImportError as err:  # the webhook image: it purges and measures, it does not download
        raise UsageError(
            f"this installation cannot download ({err.name} is missing): run prefetch, refresh and verify --repair "
            "from the fetcher image or after `pip install 'modelcache[cli]'`, or use `prefetch --job`"
        ) from err
    return localfetch


# --- purge / rm ---------------------------------------------------------------------------------------
def cmd_purge(args: argparse.Namespace, out: TextIO) -> int:
    layout = _layout(args)
    pods_now: Callable[[], dict[str, list[PodRef]]] = (lambda: {}) if args.no_pod_check else (lambda: _live_pods(args))
    _, total = free_space(layout)
    try:
        min_free = read_watermark(args.min_free or "", capacity=total)
    except ValueError as err:
        raise UsageError(f"--min-free {args.min_free!r}: {err}") from err
    report = run_purge(
        layout,
        Round(
            policy=PurgePolicy(unused_for=_duration(args.unused_for, "--unused-for"), min_free_bytes=min_free),
            ages=Ages(staging=_duration(args.staging_after, "--staging-after"), outcomes=DEFAULT_OUTCOMES_AFTER),
            live_pods=pods_now,
            identity=_identity("purge"),
            dry_run=args.dry_run,
        ),
    )
    if args.json:
        json.dump(report.to_json(), out, indent=1)
        out.write("\n")
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for item in report.items:
        decision = item.decision
        action = verb if decision.remove and (args.dry_run or item.removed) else ("kept" if item.refused else "keep")
        refused = f"; {item.refused}" if item.refused else ""
        out.write(f"{action:12} {decision.model.source or decision.key}: {decision.reason}{refused}\n")
    for leftover in report.leftovers:
        out.write(f"{verb:12} {leftover.path}: {leftover.reason} ({format_bytes(leftover.bytes)})\n")
    for note in report.deferred:
        out.write(f"{'deferred':12} {note}\n")
    out.write(f"{'would free' if args.dry_run else 'freed'} {format_bytes(report.freed_bytes)}\n")
    return 0


def cmd_rm(args: argparse.Namespace, out: TextIO) -> int:
    layout = _layout(args)
    key = _key(layout, args.model, args.include)
    in_use: dict[str, list[PodRef]] = {} if args.no_pod_check else _live_pods(args)
    if not args.no_pod_check:
        pods = pods_of(in_use, key)
        if pods and not args.force:
            out.write(f"refused: {key} is in use by {', '.join(pods)}; delete those pods first, or --force\n")
            return 1

    def recheck() -> str | None:
        if args.no_pod_check or args.force:
            return None
        pods = pods_of(_live_pods(args), key)
        return f"a pod started using it meanwhile ({', '.join(pods)})" if pods else None

    others = {k: v for k, v in in_use.items() if k != key}
    try:
        removed = remove_model(
            layout,
            key,
            reason="removed by modelcache rm",
            identity=_identity("rm"),
            use=live_use(layout, others),
            check=RemovalCheck(recheck=recheck),
            force=args.force,
        )
    except RemovalRefusedError as err:
        out.write(f"refused: {err}\n")
        return 1
    out.write(f"removed {key}: {format_bytes(removed.freed)} freed\n")
    for note in removed.deferred:
        out.write(f"  {note}\n")
    return 0


# --- prepare ------------------------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace, out: TextIO) -> int:
    """Open the volume root to fetchers of every UID: run once, as its owner or as root."""
    from modelcache.cache.permissions import PathFacts, prepare_root, whoami

    layout = _layout(args)
    try:
        out.write(prepare_root(layout.root) + "\n")
    except PermissionError as err:
        out.write(
            f"cannot change the mode of {PathFacts.of(layout.root).text()} as {whoami()} ({err.strerror}): run "
            "this as the directory's owner or as root (on NFS with root_squash, on the server, or set the "
            'provisioner\'s permissions: docs/install.md, "Prepare the volume")\n'
        )
        return 1
    return 0


# --- agent --------------------------------------------------------------------------------------------
def cmd_agent(args: argparse.Namespace, out: TextIO) -> int:
    try:
        from modelcache.agent.__main__ import run as run_agent
    except ImportError as err:
        raise UsageError(NO_CLUSTER_CLIENT.format(missing=err.name, command="modelcache agent")) from err
    from modelcache.agent.config import AgentSettings

    environ = dict(os.environ)
    if args.cache:
        environ[CACHE_ROOT_ENV] = args.cache
    try:
        settings = AgentSettings.from_env(environ)
    except SettingsError as err:
        raise UsageError(str(err)) from err
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    return run_agent(settings)


# --- helpers ------------------------------------------------------------------------------------------
def _layout(args: argparse.Namespace) -> CacheLayout:
    root = args.cache or os.environ.get(CACHE_ROOT_ENV, "")
    if not root:
        raise UsageError(f"no cache directory: pass --cache DIR or set {CACHE_ROOT_ENV}")
    path = Path(root)
    if not path.is_dir():
        raise UsageError(f"--cache {root!r} is not a directory; pass the cache volume's mount path")
    return CacheLayout(path.absolute())


def _key(layout: CacheLayout, value: str, include: Sequence[str]) -> str:
    """A model URI (with the same include patterns the pods use) or a key as `modelcache ls` shows it."""
    if "://" in value:
        try:
            source = parse_source(value, allow_http=True)
            patterns = parse_include(",".join(include)) if include else ()
        except ContractError as err:
            raise UsageError(str(err)) from err
        return model_key(source, patterns)
    with contextlib.suppress(ValueError):
        if check_model_key(value) in model_keys(layout):
            return value
    raise UsageError(
        f"{value!r} is neither a model URI (hf://org/name[@revision], s3://bucket/prefix, https://...) nor a key "
        "in this cache; `modelcache ls` lists the keys"
    )


def _live_pods(args: argparse.Namespace) -> dict[str, list[PodRef]]:
    from modelcache.runtime.kube import live_pods_by_key

    api = _api()
    try:
        return live_pods_by_key(api, getattr(args, "pods_namespace", None) or "")
    except Exception as err:  # the client raises config, HTTP and API errors of several kinds
        raise ClusterError(
            f"cannot list pods through the Kubernetes API ({type(err).__name__}: {str(err)[:300]}); a model may be "
            "removed only when no live pod uses it, so nothing was removed. Fix the access (in a pod: its "
            "service account needs pods list across namespaces) or retry when the API answers, or pass "
            "--no-pod-check if no pod can use this cache"
        ) from err


NO_CLUSTER_CLIENT = (
    "this installation has no Kubernetes client ({missing} is missing): the fetcher image downloads and works "
    "on the volume, the webhook image asks the cluster. Run `{command}` from the webhook image (where the "
    "cache agent runs) or after `pip install 'modelcache[cli]'`"
)


def _api() -> Any:
    try:
        from modelcache.runtime.kube import connect

        return connect()
    except ImportError as err:
        raise ClusterError(
            NO_CLUSTER_CLIENT.format(missing=err.name, command=" ".join(["modelcache", *sys.argv[1:]]))
            + "; for ls, purge and rm, --no-pod-check asks no cluster (only if no pod can use this cache)"
        ) from err


def _identity(command: str) -> Identity:
    return Identity.here(
        pod=os.environ.get(POD_NAME_ENV) or f"modelcache-{command}@{socket.gethostname()}",
        namespace=os.environ.get(POD_NAMESPACE_ENV, ""),
        node=os.environ.get(NODE_NAME_ENV, ""),
    )


def _duration(value: str, option: str) -> float:
    try:
        return read_seconds(minimum=1.0)(value)
    except ValueError as err:
        raise UsageError(f"{option} {value!r}: {err}") from err


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


def _configure_logging(fmt: str, *, key: str = "-") -> None:
    """Every line names a model key ("-" for lines about the whole cache)."""
    configure_logging(fmt=fmt, model_key=key)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelcache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help=f"the cache directory (default: ${CACHE_ROOT_ENV})")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    commands = parser.add_subparsers(dest="command", required=True)
    ls = commands.add_parser("ls", help="every model: source, state, size, last use (and pods with --pods)")
    ls.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    ls.add_argument("--pods", action="store_true", help="ask the cluster which live pods use each model")
    ls.add_argument("--pods-namespace", help=_PODS_NAMESPACE_HELP)
    ls.add_argument("--nodes", action="store_true", help="node-local caches: which nodes hold which models (cluster)")
    ls.set_defaults(run=cmd_ls)
    _add_fetch_commands(commands)
    verify = commands.add_parser("verify", help="re-hash models against their recorded digests")
    verify.add_argument("models", nargs="*", help="URIs or keys (default: every model)")
    verify.add_argument("--include", action="append", default=[])
    verify.add_argument("--repair", action="store_true", help="fetch again the files found corrupt")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=cmd_verify)
    _add_removal_commands(commands)
    prepare = commands.add_parser(
        "prepare", help="make the volume root writable for fetchers of every UID (once, as its owner or root)"
    )
    prepare.set_defaults(run=cmd_prepare)
    agent = commands.add_parser(
        "agent",
        help="run the cache agent: scheduled purge and /metrics (settings from MODELCACHE_*)",
        description=_agent_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    agent.set_defaults(run=cmd_agent)
    return parser


def _agent_help() -> str:
    from modelcache.agent.config import help_text

    return help_text().split("\n", 2)[2]  # without its usage line: argparse writes its own


def _add_fetch_commands(commands: Any) -> None:
    for name, text in (
        ("prefetch", "warm the cache with a model ahead of a rollout"),
        ("refresh", "re-resolve a branch or tag (@main) to its newest commit and fetch it"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("uri", help="hf://org/name[@revision], s3://bucket/prefix or https://...")
        command.add_argument("--include", action="append", default=[], help="include patterns, as the pods set them")
        command.add_argument("--allow-http", action="store_true", help="accept an http:// source")
        command.add_argument("--job", action="store_true", help="print a Kubernetes Job that does it in the cluster")
        command.add_argument("--apply", action="store_true", help="create that Job through the current context")
        command.add_argument(
            "--declare",
            action="store_true",
            help="print (--apply: create) a CachedModel instead: the controller fetches it into --namespace's cache",
        )
        command.add_argument("--namespace", default="default", help="the Job's namespace (whose cache PVC it warms)")
        command.add_argument("--image", default=DEFAULT_FETCHER_IMAGE, help="the Job container's image")
        command.add_argument("--secret", help="a Secret with the source's credentials, as modelcache.io/secret")
        command.set_defaults(run=cmd_prefetch)
    warm = commands.add_parser("warm", help="node-local: keep the models of a warm-up list ready (until SIGTERM)")
    warm.add_argument("--list", required=True, help="the warm-up list file the node's cache agent writes")
    warm.add_argument("--every", default="30s", help="time between two looks at the list (default 30s)")
    warm.add_argument("--once", action="store_true", help="one round; exit 1 if a model is not ready after it")
    warm.set_defaults(run=cmd_warm)


def _add_removal_commands(commands: Any) -> None:
    purge = commands.add_parser("purge", help="remove models no live pod used for --unused-for")
    purge.add_argument("--unused-for", default=DEFAULT_UNUSED_FOR, help="a duration: 1w, 3d, 12h (default 1w)")
    purge.add_argument("--min-free", help="watermark: evict least recently used models below this (50Gi, 10%%)")
    purge.add_argument(
        "--staging-after", default=DEFAULT_STAGING_AFTER, help="remove dead download attempts this old (default 1d)"
    )
    purge.add_argument("--dry-run", action="store_true", help="show exactly what would go; remove nothing")
    purge.add_argument(
        "--no-pod-check", action="store_true", help="do not ask the cluster for live pods (only if none can use it)"
    )
    purge.add_argument("--pods-namespace", help=_PODS_NAMESPACE_HELP)
    purge.add_argument("--json", action="store_true")
    purge.set_defaults(run=cmd_purge)
    rm = commands.add_parser("rm", help="remove one model, refusing while it is in use or locked")
    rm.add_argument("model", help="a URI or a key")
    rm.add_argument("--include", action="append", default=[])
    rm.add_argument("--force", action="store_true", help="remove even when in use or locked")
    rm.add_argument("--no-pod-check", action="store_true", help="do not ask the cluster for live pods")
    rm.add_argument("--pods-namespace", help=_PODS_NAMESPACE_HELP)
    rm.set_defaults(run=cmd_rm)


if __name__ == "__main__":
    sys.exit(main())
