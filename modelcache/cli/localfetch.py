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
from typing import Any

from fetcher.config import FetchSettings
from fetcher.fetch import ensure_model, record_run
from modelcache.cache.inventory import current_download
from modelcache.cache.layout import CacheLayout
from modelcache.cli.progress import Meter
from modelcache.contract import wire
from modelcache.contract.errors import FetchError
from modelcache.contract.keys import model_key
from modelcache.contract.sources import HttpSource, parse_source


def fetch(layout: CacheLayout, uri: str, include: tuple[str, ...], *, refresh: bool) -> str:
    """Run the fetcher on this cache with a progress bar fed by its owner record; the fetcher's summary."""
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
    settings = FetchSettings.from_env(env)
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def work() -> None:
        started = time.monotonic()
        try:
            outcome.append(ensure_model(settings, environ=env))
        except FetchError as err:
            record_run(settings, None, err, time.monotonic() - started)
            failure.append(err)
        except BaseException as err:  # noqa: BLE001 (re-raised in the caller's thread)
            failure.append(err)
        else:
            record_run(settings, outcome[0], None, outcome[0].seconds)

    worker = threading.Thread(target=work, name="modelcache-fetch")
    worker.start()
    _follow(layout, key, worker, label=f"{'refresh' if refresh else 'fetch'} {uri}")
    if failure:
        raise failure[0]
    summary: str = outcome[0].summary()
    return summary


def _follow(layout: CacheLayout, key: str, worker: threading.Thread, *, label: str) -> None:
    """Show the download's progress, read from the owner record the fetcher's heartbeat writes."""
    with Meter(label, 0, stream=sys.stderr) as meter:
        while worker.is_alive():
            worker.join(0.5)
            download = current_download(layout, key)  # only the owner record: no lock probe, no tree walk
            if download.bytes_total:
                meter.update(download.bytes_done, download.bytes_total)
