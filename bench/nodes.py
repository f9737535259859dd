"""Node-local caches: `make bench-nodes` (python -m bench.nodes).

One cache directory per node, as each node's hostPath gives its pods, on the local Hub-protocol server
(loopback). Measured in the same run:

- origin bytes for `--pods` fetchers started at once, spread round-robin over M nodes (M = 1, 2, 4): one
  copy per node, whatever the number of pods, and the wall time until the last pod is ready;
- the cache hit on a node warmed by `modelcache warm` (the node agent's warm container) against the
  hit on a cache a pod's fetcher filled (the shared-volume path): the same process, interleaved runs
  (which goes first alternates), median wall and peak RSS of each, and their ratio.

Every process's wall time and peak RSS come from os.wait4 (bench/measure.py). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fetch import FETCHER, MIB, Run, base_env, timed
from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubRepo, HubServer
from devtools.tinymodel import write_sharded_model
from modelcache.contract import wire
from modelcache.contract.warmup import WarmModel, dump_list

SOURCE = "hf://bench/model"


def spread(hub: HubServer, work: Path, *, nodes: int, pods: int) -> tuple[float, int]:
    """(wall seconds, origin bytes) for `pods` fetchers at once over `nodes` cache directories."""
    caches = [work / f"spread-{nodes}" / f"node-{n}" for n in range(nodes)]
    for cache in caches:
        cache.mkdir(parents=True)
    envs = []
    for pod in range(pods):
        env = fetcher_environment(SOURCE, caches[pod % nodes], pod=f"pod-{pod}", extra={"HF_ENDPOINT": hub.url})
        envs.append({**env, "MODELCACHE_LOCK_POLL": "100ms", wire.NODE_NAME_ENV: f"node-{pod % nodes}"})
    hub.reset_counters()
    started = time.perf_counter()
    processes = [subprocess.Popen(FETCHER, env=env, stderr=subprocess.DEVNULL) for env in envs]
    codes = [process.wait() for process in processes]
    wall = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"a fetcher failed: {codes}")
    shutil.rmtree(work / f"spread-{nodes}")
    return wall, hub.bytes_served


def hits(hub: HubServer, work: Path, rounds: int) -> tuple[list[Run], list[Run]]:
    """Hit runs on a warmed node and on a pod-filled cache, interleaved."""
    warmed, filled = work / "warmed", work / "filled"
    for cache in (warmed, filled):
        cache.mkdir()
    listing = work / "warm.json"
    listing.write_text(dump_list([WarmModel(SOURCE + "@main")], node="gpu-1"))
    environment = {**os.environ, "HF_ENDPOINT": hub.url, "KUBECONFIG": "/nonexistent"}
    command = [sys.executable, "-m", "modelcache", "--cache", str(warmed), "warm", "--list", str(listing), "--once"]
    subprocess.run(command, env=environment, check=True, capture_output=True)
    env = {**base_env(), "HF_ENDPOINT": hub.url}
    filled_env = fetcher_environment(SOURCE, filled, extra=env)
    if timed(FETCHER, filled_env).code != 0:
        raise RuntimeError("the fetcher failed")
    warmed_env = fetcher_environment(SOURCE, warmed, extra=env)
    on_warmed: list[Run] = []
    on_filled: list[Run] = []
    for round_ in range(rounds):  # which goes first alternates: no order effect in the ratio
        pair = [(on_warmed, warmed_env), (on_filled, filled_env)]
        for runs, run_env in pair if round_ % 2 == 0 else pair[::-1]:
            runs.append(timed(FETCHER, run_env))
    if any(run.code for run in on_warmed + on_filled):
        raise RuntimeError("a hit failed")
    return on_warmed, on_filled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256, help="size of the Hub model")
    parser.add_argument("--pods", type=int, default=8, help="pods started at once, spread over the nodes")
    parser.add_argument("--rounds", type=int, default=15, help="hit runs of each kind")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelcache-bench-nodes-"))
    repo = HubRepo.single("bench/model", write_sharded_model(work / "src", total_bytes=args.size_mib * MIB, shards=4))
    for item in repo.commits[repo.main].values():
        _ = item.sha256, item.git_sha1  # computed before timing
    model_bytes = sum(f.size for f in repo.commits[repo.main].values())
    with HubServer([repo]) as hub:
        spreads = [(nodes, *spread(hub, work, nodes=nodes, pods=args.pods)) for nodes in (1, 2, 4)]
        on_warmed, on_filled = hits(hub, work, args.rounds)
    print(f"\n{args.pods} pods started at once over M nodes, {model_bytes / MIB:.0f} MiB model\n")
    print("| nodes (M) | pods | origin bytes / model size | wall until every pod is ready |")
    print("|---|---|---|---|")
    for nodes, wall, served in spreads:
        print(f"| {nodes} | {args.pods} | {served / model_bytes:.2f} | {wall:.2f} s |")
    warm_wall = statistics.median(r.wall for r in on_warmed)
    fill_wall = statistics.median(r.wall for r in on_filled)
    print(f"\ncache hit, median of {args.rounds} interleaved runs each\n")
    print("| cache | wall | peak RSS |")
    print("|---|---|---|")
    print(f"| warmed by `modelcache warm` | {warm_wall * 1000:.0f} ms | "
          f"{statistics.median(r.max_rss_mb for r in on_warmed):.1f} MB |")  # fmt: skip
    print(f"| filled by a pod's fetcher | {fill_wall * 1000:.0f} ms | "
          f"{statistics.median(r.max_rss_mb for r in on_filled):.1f} MB |")  # fmt: skip
    print(f"| ratio warmed / filled | {warm_wall / fill_wall:.2f} | |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
