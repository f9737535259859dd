"""`prefetch`, `refresh` and `verify --repair` on this machine: the real fetcher, in this process.

Its own module because it needs the fetcher's source libraries (huggingface_hub, boto3), which the
webhook image, where the cache agent runs, does not have: the CLI imports it only when asked to download.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from fetcher.config import FetchSettings
from fetcher.fetch import ensure_model, record_run
from modelcache.cache.inventory import current_download
from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import Marker
from modelcache.cli.progress import Meter
from modelcache.contract import wire
from modelcache.contract.errors import FetchError
from modelcache.contract.keys import model_key
from modelcache.contract.sources import HttpSource, parse_source


def fetch(layout: CacheLayout, uri: str, include: tuple[str, ...], *, refresh: bool) -> str:
    """Run the fetcher on this cache with a progress bar fed by its owner record; the fetcher's summary."""
    settings, env = _settings(layout, uri, include, refresh=refresh)
    outcome: list[Any] = []

    def work() -> str:
        started = time.monotonic()
        try:
            outcome.append(ensure_model(settings, environ=env))
        except FetchError as err:
            record_run(settings, None, err, time.monotonic() - started)
            raise
        record_run(settings, outcome[0], None, outcome[0].seconds)
        summary: str = outcome[0].summary()
        return summary

    return _in_thread(layout, settings.key, work, label=f"{'refresh' if refresh else 'fetch'} {uri}")


def repair(layout: CacheLayout, marker: Marker, paths: list[str]) -> str:
    """Replace these damaged files of a ready model with verified copies of its recorded version."""
    from fetcher.repair import repair_files

    settings, env = _settings(layout, marker.source, marker.include, refresh=False)
    return _in_thread(
        layout, settings.key, lambda: repair_files(settings, paths, environ=env), label=f"repair {marker.source}"
    )


def _settings(
    layout: CacheLayout, uri: str, include: tuple[str, ...], *, refresh: bool
) -> tuple[FetchSettings, dict[str, str]]:
    source = parse_source(uri, allow_http=True)
    key = model_key(source, include)
    root = str(layout.root)
    env = {
        **os.environ,  # credentials and endpoints: HF_TOKEN, HF_ENDPOINT, AWS_*, MODELCACHE_HTTP_AUTHORIZATION
        wire.SOURCE_ENV: uri,
        wire.MODEL_KEY_ENV: key,
        wire.CACHE_ROOT_ENV: root,
        wire.MODEL_PATH_ENV: wire.model_path(root, key),
        wire.SHARED_CACHE_ENV: "true",
        wire.POD_NAME_ENV: f"modelcache-cli@{socket.gethostname()}",
        wire.REFRESH_ENV: "true" if refresh else "false",
        "MODELCACHE_HEARTBEAT": "500ms",
    }
    if include:
        env[wire.INCLUDE_ENV] = ",".join(include)
    if isinstance(source, HttpSource) and source.scheme == "http":  # the caller accepted it
        env[wire.ALLOW_HTTP_ENV] = "true"
    return FetchSettings.from_env(env), env


def _in_thread(layout: CacheLayout, key: str, work: Callable[[], str], *, label: str) -> str:
    """Run the work in a thread while this one shows its progress; its result, or its exception raised here."""
    result: list[str] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as err:  # noqa: BLE001 (re-raised in the caller's thread)
            failure.append(err)

    worker = threading.Thread(target=run, name="modelcache-fetch")
    worker.start()
    _follow(layout, key, worker, label=label)
    if failure:
        raise failure[0]
    return result[0]


def _follow(layout: CacheLayout, key: str, worker: threading.Thread, *, label: str) -> None:
    """Show the download's progress, read from the owner record the fetcher's heartbeat writes."""
    with Meter(label, 0, stream=sys.stderr) as meter:
        while worker.is_alive():
            worker.join(0.5)
            download = current_download(layout, key)  # only the owner record: no lock probe, no tree walk
            if download.bytes_total:
                meter.update(download.bytes_done, download.bytes_total)
