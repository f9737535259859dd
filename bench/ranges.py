"""One large file, one stream against parallel ranged requests: `python -m bench.ranges`.

The real fetcher process downloads a single large LFS file from the local Hub server, with ranges off
(MODELCACHE_RANGE_CHUNK=0: one stream, as before) and on (auto: chunks by size, as many streams as
download slots, and with 8 slots), interleaved with 8 ranged curl requests at once whose files are
then fsynced, as the fetcher leaves its own (the limit: curl verifies nothing); a fresh cache each
time; on a local origin and behind a per-connection cap (the Hub server throttles each response, as
CDNs and object stores cap single streams). The fetcher verifies every byte (sha256) before
publishing. Prints a markdown table of median wall seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.fetch import FETCHER, timed
from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubRepo, HubServer

MODES = {"one stream": "0", "parallel ranges": "auto", "parallel ranges, 8 slots": "auto/8"}
CURL_RANGES = 8  # the limit: curl, 8 ranged requests at once into 8 files (then fsynced), nothing verified


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
            heads = [*MODES, f"curl, {CURL_RANGES} ranges + fsync (no verification)"]
            print(f"| {args.size_mib} MiB, one file | " + " | ".join(heads) + " | parallel / one | parallel / curl |")
            print("|---|" + "---:|" * (len(heads) + 2))
            for label, cap in caps:
                hub.faults.bytes_per_second = cap
                walls: dict[str, list[float]] = {mode: [] for mode in heads}
                for _ in range(args.rounds):
                    for mode, setting in MODES.items():
                        walls[mode].append(_fetch(hub, work, setting))
                    walls[heads[-1]].append(_curl(hub, work, size=blob.stat().st_size))
                medians = {mode: statistics.median(values) for mode, values in walls.items()}
                ratio = medians["one stream"] / medians["parallel ranges"]
                of_curl = medians[heads[-1]] / medians["parallel ranges"]
                cells = " | ".join(f"{medians[m]:.2f} s" for m in heads)
                print(f"| {label} | {cells} | {ratio:.2f}x faster | {of_curl:.2f}x of curl's speed |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fetch(hub: HubServer, work: Path, setting: str) -> float:
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir()
    chunk, _, workers = setting.partition("/")
    extra = {"HF_ENDPOINT": hub.url, "MODELCACHE_RANGE_CHUNK": chunk} | (
        {"MODELCACHE_WORKERS": workers} if workers else {}
    )
    env = fetcher_environment("hf://bench/large", cache, extra=extra)
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    result = timed(FETCHER, env)
    if result.code != 0:
        raise SystemExit("the fetcher failed")
    return result.wall


def _curl(hub: HubServer, work: Path, *, size: int) -> float:
    """curl -r in CURL_RANGES processes at once, from the CDN address the Hub redirects to."""
    head = subprocess.run(
        ["curl", "-sI", f"{hub.url}/bench/large/resolve/main/weights.bin"], capture_output=True, text=True, check=True
    )
    location = next(
        line.split(" ", 1)[1].strip() for line in head.stdout.splitlines() if line.lower().startswith("location:")
    )
    out = work / "curl"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    step = -(-size // CURL_RANGES)
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            ["curl", "-s", "-r", f"{i * step}-{min(size, (i + 1) * step) - 1}", "-o", str(out / str(i)), location]
        )
        for i in range(CURL_RANGES)
    ]
    if any(p.wait() for p in processes):
        raise SystemExit("curl failed")
    for part in out.iterdir():  # on the disk, as the fetcher leaves its files: counted, as in the issue
        fd = os.open(part, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
