"""One large file, one stream against parallel ranged requests: `python -m bench.ranges`.

The real fetcher process downloads a single large LFS file from the local Hub server, with ranges off
(MODELCACHE_RANGE_CHUNK=0: one stream, as before) and on (auto: chunks by size, as many streams as
download slots), interleaved, a fresh cache each time; on a local origin and behind a per-connection
cap (the Hub server throttles each response, as CDNs and object stores cap single streams). Both
verify every byte (sha256) before publishing. Prints a markdown table of median wall seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.fetch import FETCHER, timed
from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubRepo, HubServer

MODES = {"one stream": "0", "parallel ranges": "auto"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1536, help="the file's size")
    parser.add_argument("--cap-mb", type=float, default=60.0, help="per-connection cap, MB/s (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ranges-"))
    try:
        blob = work / "weights.bin"
        with blob.open("wb") as out:
            rng = random.Random(1)
            for _ in range(args.size_mib):
                out.write(rng.randbytes(1 << 20))
        with HubServer([HubRepo.single("bench/large", {"config.json": b"{}", "weights.bin": blob})]) as hub:
            capped = [(f"{args.cap_mb:g} MB/s per connection", args.cap_mb * 1e6)] if args.cap_mb else []
            caps: list[tuple[str, float | None]] = [("local", None), *capped]
            print(f"| {args.size_mib} MiB, one file | " + " | ".join(MODES) + " | parallel / one |")
            print("|---|" + "---:|" * (len(MODES) + 1))
            for label, cap in caps:
                hub.faults.bytes_per_second = cap
                walls: dict[str, list[float]] = {mode: [] for mode in MODES}
                for _ in range(args.rounds):
                    for mode, setting in MODES.items():
                        walls[mode].append(_fetch(hub, work, setting))
                medians = {mode: statistics.median(values) for mode, values in walls.items()}
                ratio = medians["one stream"] / medians["parallel ranges"]
                cells = " | ".join(f"{medians[m]:.2f} s" for m in MODES)
                print(f"| {label} | {cells} | {ratio:.2f}x faster |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fetch(hub: HubServer, work: Path, setting: str) -> float:
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir()
    extra = {"HF_ENDPOINT": hub.url, "MODELCACHE_RANGE_CHUNK": setting}
    env = fetcher_environment("hf://bench/large", cache, extra=extra)
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    result = timed(FETCHER, env)
    if result.code != 0:
        raise SystemExit("the fetcher failed")
    return result.wall


if __name__ == "__main__":
    main()
