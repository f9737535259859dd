"""Where a cold copy spends its time: `python -m bench.phases`.

The real fetcher, a fresh cache each round, a sharded model from the local Hub server. Its log line
"phases: ..." gives each phase it measures (waiting for the lock, opening the source with its library,
resolving, preparing the staging attempt, downloading and verifying, publishing); what the process
spends outside them (the interpreter's start and imports, the hit check, the records, the exit) is the
wall time measured from outside, less the fetcher's own. Prints the medians as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubRepo, HubServer
from devtools.tinymodel import write_sharded_model

_PHASE = re.compile(r"([a-z ]+?) (\d+\.\d+) s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    try:
        files = write_sharded_model(work / "src", total_bytes=args.size_mib << 20, shards=args.shards)
        repo = HubRepo.single("bench/model", files)
        for item in repo.commits[repo.main].values():
            _ = item.sha256, item.git_sha1  # computed before timing
        rounds: list[dict[str, float]] = []
        with HubServer([repo]) as hub:
            for _ in range(args.rounds):
                rounds.append(_one(hub, work))
        names = list(rounds[0])
        medians = {name: statistics.median(r[name] for r in rounds) for name in names}
        wall = medians["wall"]
        print(f"| {args.size_mib} MiB in {args.shards} shards, cold | median s of {args.rounds} | share of the wall |")
        print("|---|---:|---:|")
        for name in names:
            print(f"| {name} | {medians[name]:.2f} | {medians[name] / wall:.0%} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _one(hub: HubServer, work: Path) -> dict[str, float]:
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir()
    env = fetcher_environment(
        "hf://bench/model", cache, extra={"HF_ENDPOINT": hub.url, "MODELCACHE_LOG_FORMAT": "json"}
    )
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "fetcher"], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    messages = [json.loads(line)["message"] for line in result.stderr.splitlines() if line.startswith("{")]
    phases = next(m for m in messages if m.startswith("phases: "))
    spent = {name.strip(", "): float(seconds) for name, seconds in _PHASE.findall(phases.removeprefix("phases: "))}
    own = float(re.search(r"in (\d+\.\d+) s", next(m for m in messages if m.startswith("downloaded"))).group(1))  # type: ignore[union-attr]
    return {
        **spent,
        "the rest of the fetcher (hit check, lock, records)": max(0.0, own - sum(spent.values())),
        "process start, imports and exit": max(0.0, wall - own),
        "wall": wall,
    }


if __name__ == "__main__":
    main()
