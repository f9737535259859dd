"""Cold copies side by side, every contender on every model and origin: `python -m bench.cold`.

Part of `make bench-fetch`. Two models on the local Hub-protocol server (LFS files through its CDN
origin, as the Hub serves them): M1, about 1 GiB in 4 safetensors shards plus small files, and M2,
one 1.5 GiB file; each from a local origin and behind a per-connection cap (the server throttles every
response, as CDNs and object stores cap single streams). Interleaved, medians of `--rounds`, a fresh
directory every time. Contenders, with what each checks before it says done:

- the modelcache fetcher (sha256 of every LFS byte, git sha1 of the rest, fsync before exit);
- AIBrix's downloader (PyPI aibrix 0.8.0, `python -m aibrix.downloader`, huggingface_hub 0.24), with
  and without hf_transfer (parallel ranges), in its own virtualenv `.venv-aibrix`;
- huggingface_hub's snapshot_download, and KServe's storage initializer (`.venv-peers`);
- curl, files one after another, and curl with 8 ranged requests at once (the limit).

The peers leave their data in the page cache; the table also shows each one's wall once its files are
on the disk (fsynced after it exits, timed), which is where the fetcher's own wall already is.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.fetch import FETCHER, MIB, PEERS_PYTHON, Run, base_env, timed
from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubRepo, HubServer
from devtools.tinymodel import write_sharded_model

AIBRIX_PYTHON = Path(".venv-aibrix/bin/python")
CURL_RANGES = 8


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    verifies: str
    run: Callable[[HubServer, HubRepo, Path], float]  # the wall seconds of one cold copy into the directory
    available: bool = True


def _ours(hub: HubServer, repo: HubRepo, out: Path) -> float:
    env = fetcher_environment(f"hf://{repo.repo_id}", out, extra={**base_env(), "HF_ENDPOINT": hub.url})
    return _checked(timed(FETCHER, env), "the modelcache fetcher")


def _aibrix(transfer: bool) -> Callable[[HubServer, HubRepo, Path], float]:
    def run(hub: HubServer, repo: HubRepo, out: Path) -> float:
        env = {**base_env(), "HF_ENDPOINT": hub.url, "HOME": str(out.parent)}
        env["HF_HUB_ENABLE_HF_TRANSFER"] = "1" if transfer else "0"
        command = [str(AIBRIX_PYTHON), "-m", "aibrix.downloader", "--model-uri", repo.repo_id, "--local-dir", str(out)]
        return _checked(timed(command, env), "the AIBrix downloader")

    return run


def _snapshot(hub: HubServer, repo: HubRepo, out: Path) -> float:
    script = (
        "import sys; from huggingface_hub import snapshot_download;"
        "snapshot_download(sys.argv[1], cache_dir=sys.argv[2])"
    )
    env = {**base_env(), "HF_ENDPOINT": hub.url, "HOME": str(out.parent)}
    return _checked(timed([sys.executable, "-c", script, repo.repo_id, str(out)], env), "snapshot_download")


def _kserve(hub: HubServer, repo: HubRepo, out: Path) -> float:
    script = "import sys; from kserve_storage import Storage; Storage.download(sys.argv[1], sys.argv[2])"
    env = {**base_env(), "HF_ENDPOINT": hub.url, "HOME": str(out.parent)}
    command = [str(PEERS_PYTHON), "-c", script, f"hf://{repo.repo_id}", str(out)]
    return _checked(timed(command, env), "kserve-storage")


def _curl_sequential(hub: HubServer, repo: HubRepo, out: Path) -> float:
    command = ["curl", "-sSfL"]
    for path in repo.commits[repo.main]:
        command += ["-o", str(out / path.replace("/", "_")), f"{hub.url}/{repo.repo_id}/resolve/main/{path}"]
    return _checked(timed(command, base_env()), "curl")


def _curl_ranges(hub: HubServer, repo: HubRepo, out: Path) -> float:
    """Every file cut into ranges of at most 1/8 of the model, 8 curl processes at a time, from the CDN."""
    files = repo.commits[repo.main]
    step = -(-sum(f.size for f in files.values()) // CURL_RANGES)
    jobs = []
    for index, (path, item) in enumerate(files.items()):
        url = _location(hub, repo, path)
        for start in range(0, item.size, step):
            end = min(item.size, start + step) - 1
            jobs.append(["curl", "-sSf", "-r", f"{start}-{end}", "-o", str(out / f"{index}.{start}"), url])
    started = time.perf_counter()
    processes: list[subprocess.Popen[bytes]] = []
    for job in jobs:
        while sum(p.poll() is None for p in processes) >= CURL_RANGES:
            time.sleep(0.002)
        processes.append(subprocess.Popen(job))
    if any(p.wait() for p in processes):
        raise SystemExit("curl failed")
    return time.perf_counter() - started


def _location(hub: HubServer, repo: HubRepo, path: str) -> str:
    """Where the Hub sends `path`: the CDN for an LFS file, the resolve address itself otherwise."""
    url = f"{hub.url}/{repo.repo_id}/resolve/main/{path}"
    head = subprocess.run(["curl", "-sI", url], capture_output=True, text=True, check=True).stdout
    found = [line.split(" ", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("location:")]
    return found[0] if found else url


def _checked(run: Run, what: str) -> float:
    if run.code != 0:
        raise SystemExit(f"{what} failed (exit {run.code})")
    return run.wall


def _flush(directory: Path) -> float:
    """Seconds to get what a contender left in the page cache onto the disk."""
    started = time.perf_counter()
    for root, _, names in os.walk(directory):
        for name in names:
            path = Path(root, name)
            if path.is_symlink() or not path.is_file():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    return time.perf_counter() - started


CONTENDERS = [
    Contender("modelcache fetcher", "sha256 of every LFS byte, git sha1 of the rest; fsync", _ours),
    Contender("AIBrix downloader", "file sizes", _aibrix(False), AIBRIX_PYTHON.exists()),
    Contender("AIBrix downloader + hf_transfer", "file sizes", _aibrix(True), AIBRIX_PYTHON.exists()),
    Contender("huggingface_hub snapshot_download", "file sizes", _snapshot),
    Contender("KServe storage initializer", "file sizes", _kserve, PEERS_PYTHON.exists()),
    Contender("curl, files one after another", "nothing", _curl_sequential),
    Contender(f"curl, {CURL_RANGES} ranges at once (the limit)", "nothing", _curl_ranges),
]


def measure(hub: HubServer, repo: HubRepo, work: Path, rounds: int) -> dict[str, tuple[float, float]]:
    """name -> (median wall, median wall once on the disk), contenders interleaved in every round."""
    walls: dict[str, list[float]] = {c.name: [] for c in CONTENDERS if c.available}
    durable: dict[str, list[float]] = {name: [] for name in walls}
    for _ in range(rounds):
        for contender in (c for c in CONTENDERS if c.available):
            out = work / "out"
            shutil.rmtree(work, ignore_errors=True)
            out.mkdir(parents=True)
            wall = contender.run(hub, repo, out)
            walls[contender.name].append(wall)
            durable[contender.name].append(wall + _flush(out))
    return {name: (statistics.median(walls[name]), statistics.median(durable[name])) for name in walls}


def _models(work: Path, shards_mib: int, large_mib: int) -> list[tuple[str, HubRepo]]:
    m1 = write_sharded_model(work / "m1", total_bytes=shards_mib * MIB, shards=4)
    large = work / "m2" / "model.gguf"
    large.parent.mkdir(parents=True)
    with large.open("wb") as out:
        block = os.urandom(MIB)
        for index in range(large_mib):
            out.write(block[index % 251 :] + block[: index % 251])
    models = [
        (f"M1: {shards_mib} MiB in 4 shards", HubRepo.single("bench/m1", m1)),
        (f"M2: one {large_mib} MiB file", HubRepo.single("bench/m2", {"config.json": b"{}", "model.gguf": large})),
    ]
    for _, repo in models:
        for item in repo.commits[repo.main].values():
            _ = item.sha256, item.git_sha1  # computed before timing
    os.sync()  # the models' own pages are on the disk before anyone is timed
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards-mib", type=int, default=1024, help="M1's size")
    parser.add_argument("--large-mib", type=int, default=1536, help="M2's size")
    parser.add_argument("--cap-mb", type=float, default=60.0, help="per-connection cap, MB/s (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    try:
        models = _models(work / "models", args.shards_mib, args.large_mib)
        caps: list[tuple[str, float | None]] = [("local", None)]
        caps += [(f"{args.cap_mb:g} MB/s per connection", args.cap_mb * 1e6)] if args.cap_mb else []
        results = {}
        with HubServer([repo for _, repo in models]) as hub:
            for label, cap in caps:
                hub.faults.bytes_per_second = cap
                for model, repo in models:
                    results[f"{model}, {label}"] = measure(hub, repo, work / "runs", args.rounds)
        print_table(results, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(results: dict[str, dict[str, tuple[float, float]]], rounds: int) -> None:
    columns = list(results)
    print(f"\nwall s, median of {rounds} (in brackets: once its files are on the disk); {os.cpu_count()} CPUs\n")
    print("| contender | checks | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for contender in (c for c in CONTENDERS if c.available):
        cells = [f"{results[c][contender.name][0]:.2f} ({results[c][contender.name][1]:.2f})" for c in columns]
        print(f"| {contender.name} | {contender.verifies} | " + " | ".join(cells) + " |")
    ours = CONTENDERS[0].name
    limit = CONTENDERS[-1].name
    peers = [c.name for c in CONTENDERS[1:-2] if c.available]
    print("\n| ratio | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    fastest = [min(results[c][p][0] for p in peers) / results[c][ours][0] for c in columns]
    fastest_durable = [min(results[c][p][1] for p in peers) / results[c][ours][1] for c in columns]
    of_curl = [results[c][limit][0] / results[c][ours][0] for c in columns]
    of_curl_durable = [results[c][limit][1] / results[c][ours][1] for c in columns]
    for label, values in (
        ("fastest peer's wall / ours (> 1: we are faster)", fastest),
        ("the same, both on the disk", fastest_durable),
        (f"our speed, of {limit}", of_curl),
        ("the same, both on the disk", of_curl_durable),
    ):
        print(f"| {label} | " + " | ".join(f"{v:.2f}x" for v in values) + " |")


if __name__ == "__main__":
    main()
