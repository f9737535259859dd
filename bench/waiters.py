"""Many pods at once on one cache against one copy: `python -m bench.waiters`.

The real fetcher, with its default lock poll (MODELCACHE_LOCK_POLL unset: 1 s, backing off from 50 ms),
fetches a sharded model from the local Hub server: alone into a fresh cache, then `--pods` processes
at once into another fresh cache, interleaved for `--rounds`. One downloads, the others wait for its
lock and find the model ready. Prints the wall of each, their ratio, and the origin bytes (in copies).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.fetch import FETCHER, MIB, base_env, timed
from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubRepo, HubServer
from devtools.tinymodel import write_sharded_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--pods", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lock-poll", default="", help="MODELCACHE_LOCK_POLL for the waiters (default: unset)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-waiters-"))
    try:
        repo = HubRepo.single(
            "bench/model", write_sharded_model(work / "src", total_bytes=args.size_mib * MIB, shards=4)
        )
        size = sum(f.size for f in repo.commits[repo.main].values())
        for item in repo.commits[repo.main].values():
            _ = item.sha256, item.git_sha1  # computed before timing
        singles, groups, copies = [], [], []
        with HubServer([repo]) as hub:
            for _ in range(args.rounds):
                singles.append(timed(FETCHER, _env(hub, _fresh(work / "single"), 0)).wall)
                hub.reset_counters()
                groups.append(_together(hub, _fresh(work / "shared"), args.pods, args.lock_poll))
                copies.append(hub.bytes_served / size)
        single, group = statistics.median(singles), statistics.median(groups)
        print(f"| {args.size_mib} MiB, 4 shards | wall s (median of {args.rounds}) |")
        print("|---|---:|")
        print(f"| one fetcher | {single:.2f} |")
        print(f"| {args.pods} fetchers at once, one cache | {group:.2f} |")
        print(f"| ratio | {group / single:.2f}x |")
        print(f"| origin bytes, in copies of the model | {max(copies):.3f} (every round) |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _env(hub: HubServer, cache: Path, pod: int, poll: str = "") -> dict[str, str]:
    extra = {**base_env(), "HF_ENDPOINT": hub.url} | ({"MODELCACHE_LOCK_POLL": poll} if poll else {})
    return fetcher_environment("hf://bench/model", cache, pod=f"pod-{pod}", extra=extra)


def _together(hub: HubServer, cache: Path, pods: int, poll: str) -> float:
    started = time.perf_counter()
    envs = [_env(hub, cache, i, poll) for i in range(pods)]
    processes = [subprocess.Popen(FETCHER, env=env, stderr=subprocess.DEVNULL) for env in envs]
    codes = [p.wait() for p in processes]
    wall = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"a fetcher failed: exit codes {codes}")
    return wall


if __name__ == "__main__":
    main()
