"""Node-local caches from the command line: `modelcache warm` keeps a node's warm-up list ready (the
``warm`` container of the cache agent's DaemonSet pod, fetcher image), and `modelcache ls --nodes` shows
which nodes hold which models (from the CachedModel objects the node agents keep; webhook image).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from modelcache.cache.layout import CacheLayout
from modelcache.cache.markers import check_ready
from modelcache.contract import cachedmodel
from modelcache.contract.errors import FetchError
from modelcache.contract.quantities import format_bytes
from modelcache.contract.warmup import WarmModel, load_list

log = logging.getLogger("modelcache")
BACKOFF_FIRST, BACKOFF_MOST = 30.0, 3600.0  # seconds before a failed model is tried again, doubling


class Warmer:
    """One node's warm-up: every round, fetch each model of the list that is not ready on this cache."""

    def __init__(self, layout: CacheLayout, list_file: Path, fetch: Callable[[WarmModel], str]) -> None:
        self.layout, self.list_file, self.fetch = layout, list_file, fetch
        self.retry_at: dict[str, tuple[int, float]] = {}  # key -> (failures, monotonic time of the next try)
        self.fetching = False
        self._said = ""

    def models(self) -> tuple[WarmModel, ...]:
        """The agent's list; none (said once) while the agent has not written it or it cannot be read."""
        try:
            models = load_list(self.list_file.read_text())
        except FileNotFoundError:
            self._say(f"no warm-up list at {self.list_file} yet: the cache agent writes it at its first scan")
            return ()
        except (OSError, ValueError) as err:
            self._say(f"cannot read the warm-up list {self.list_file}: {err}")
            return ()
        self._said = ""
        return models

    def round(self) -> list[str]:
        """Fetch what is missing; the models that failed (each retried later, with a growing delay)."""
        failed = []
        for model in self.models():
            key = model.key
            if check_ready(self.layout, key) is not None:
                self.retry_at.pop(key, None)
                continue
            failures, next_try = self.retry_at.get(key, (0, 0.0))
            if time.monotonic() < next_try:
                failed.append(model.source)
                continue
            self.fetching = True
            try:
                log.info("warm-up: %s", self.fetch(model))
                self.retry_at.pop(key, None)
            except FetchError as err:
                delay = min(BACKOFF_MOST, BACKOFF_FIRST * 2**failures)
                self.retry_at[key] = (failures + 1, time.monotonic() + delay)
                log.error("warm-up of %s failed (next try in %d s): %s", model.source, delay, err)
                failed.append(model.source)
            finally:
                self.fetching = False
        return failed

    def _say(self, text: str) -> None:
        if text != self._said:
            log.warning("%s", text)
            self._said = text


def cmd_warm(args: argparse.Namespace, out: TextIO, *, layout: CacheLayout, every: float, fetch: Any) -> int:
    """`modelcache warm`: until SIGTERM (or one round with --once: exit 1 if a model failed)."""
    warmer = Warmer(
        layout, Path(args.list), lambda m: fetch(layout, m.source, m.include, refresh=False, log_format=args.log_format)
    )
    if args.once:
        failed = warmer.round()
        out.write(f"warm-up: {len(failed)} model(s) not ready" + (f": {', '.join(failed)}\n" if failed else "\n"))
        return 1 if failed else 0
    stop = threading.Event()

    def on_term(signum: int, _: FrameType | None) -> None:
        if warmer.fetching:  # the download resumes from its staged files at the next start
            os._exit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log.info("warm-up of %s from the list %s, every %d s", layout.root, args.list, every)
    while not stop.is_set():
        warmer.round()
        stop.wait(every)
    return 0


def node_rows(api: Any) -> list[list[str]]:
    """`modelcache ls --nodes`: a row per model and node whose own cache holds it (or fetches it), under
    a header row."""
    from modelcache.runtime.kube import path

    listed = api.get(path(cachedmodel.API_VERSION, cachedmodel.PLURAL)).get("items", [])
    rows = [["NODE", "SOURCE", "PHASE", "SIZE", "PODS", "LAST USED", "CACHEDMODEL"]]
    for obj in sorted(listed, key=lambda o: str(o["metadata"]["name"])):
        for entry in (obj.get("status") or {}).get("caches") or []:
            node = cachedmodel.node_of(str(entry.get("volume", "")))
            if not node:
                continue
            size = format_bytes(int(entry["sizeBytes"])) if entry.get("sizeBytes") else "-"
            phase = str(entry.get("phase", "?"))
            if phase == "Downloading" and entry.get("bytesTotal"):
                phase += f" {int(entry.get('bytesDone', 0)) * 100 // int(entry['bytesTotal'])}%"
            source = str((obj.get("spec") or {}).get("source", "?"))
            used = str(entry.get("lastUsed", "never"))
            rows.append([node, source, phase, size, str(entry.get("pods", 0)), used, obj["metadata"]["name"]])
    rows[1:] = sorted(rows[1:])
    return rows
