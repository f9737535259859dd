"""Benchmark of the fetcher: `make bench-fetch` (python -m bench.fetch).

A ~1 GiB model (safetensors shards plus small files) on the local Hub-protocol server, and a smaller
one on a moto S3 server, all on loopback. Measured in the same run:

- a single cold copy with our fetcher, against raw sequential curl of the same bytes,
  huggingface_hub.snapshot_download, and KServe's storage initializer (PyPI kserve-storage, in its own
  virtualenv, .venv-peers, because it brings cloud SDKs we do not want);
- 8 fetchers at once on one directory: origin bytes / model size, wall time against the single copy,
  and samples of the model taken after the first success that saw a missing or short file;
- a cache hit (recording its use and outcome, and linking the pod's pin): process wall time and peak RSS;
- peak RSS of a cold fetch for two model sizes (it must not grow with the model);
- S3: our fetcher against boto3's transfer manager (s3transfer) on the same moto server.

Every process's wall time and peak RSS come from os.wait4, in a small launcher (bench/measure.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubRepo, HubServer
from devtools.tinymodel import write_sharded_model
from modelcache.contract import wire

PEERS_PYTHON = Path(".venv-peers/bin/python")
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Run:
    wall: float
    max_rss_mb: float
    code: int


def timed(command: Sequence[str], env: Mapping[str, str]) -> Run:
    """Run a process through bench.measure: its wall time and its own peak RSS (see bench/measure.py)."""
    launcher = subprocess.run(
        [sys.executable, "-m", "bench.measure", *command],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(launcher.stdout)
    if result["code"] != 0:
        sys.stderr.write(result["stderr"])
    return Run(wall=result["wall"], max_rss_mb=result["max_rss_kb"] / 1024, code=result["code"])


FETCHER = [sys.executable, "-m", "fetcher"]


def base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}


def hub_peers(hub: HubServer, repo: HubRepo, work: Path) -> dict[str, Run]:
    """curl, snapshot_download and kserve-storage, each into a fresh directory."""
    commit = repo.main
    files = repo.commits[commit]
    env = {**base_env(), "HF_ENDPOINT": hub.url, "HOME": str(work)}
    results: dict[str, Run] = {}
    curl = ["curl", "-sSfL"]
    target = work / "curl"
    target.mkdir()
    for path in files:
        curl += ["-o", str(target / path.replace("/", "_")), f"{hub.url}/{repo.repo_id}/resolve/{commit}/{path}"]
    results["raw curl, sequential"] = timed(curl, env)
    script = (
        "import sys; from huggingface_hub import snapshot_download;"
        "snapshot_download(sys.argv[1], cache_dir=sys.argv[2])"
    )
    results["huggingface_hub.snapshot_download"] = timed(
        [sys.executable, "-c", script, repo.repo_id, str(work / "hf-cache")], env
    )
    if PEERS_PYTHON.exists():
        script = "import sys; from kserve_storage import Storage; Storage.download(sys.argv[1], sys.argv[2])"
        results["kserve-storage (storage initializer)"] = timed(
            [str(PEERS_PYTHON), "-c", script, f"hf://{repo.repo_id}", str(work / "kserve")], env
        )
    return results


def concurrent(hub: HubServer, repo: HubRepo, cache: Path, pods: int) -> tuple[float, int, int, int]:
    """(wall, origin bytes, samples, incomplete samples) for `pods` fetchers at once on one cache."""
    source = f"hf://{repo.repo_id}"
    sizes = {p: f.size for p, f in repo.commits[repo.main].items()}
    envs = [
        fetcher_environment(
            source, cache, pod=f"pod-{i}", extra={"HF_ENDPOINT": hub.url, "MODELCACHE_LOCK_POLL": "100ms"}
        )
        for i in range(pods)
    ]
    model = Path(envs[0][wire.MODEL_PATH_ENV])
    hub.reset_counters()
    started = time.perf_counter()
    processes = [subprocess.Popen(FETCHER, env=e, stderr=subprocess.DEVNULL) for e in envs]
    samples = bad = 0
    seen_success = False
    while any(p.poll() is None for p in processes):
        seen_success = seen_success or any(p.poll() == 0 for p in processes)
        if seen_success:
            samples += 1
            try:
                bad += any((model / p).stat().st_size != s for p, s in sizes.items())
            except OSError:
                bad += 1
        time.sleep(0.005)
    wall = time.perf_counter() - started
    if any(p.returncode != 0 for p in processes):
        raise RuntimeError("a concurrent fetcher failed")
    return wall, hub.bytes_served, samples, bad


def hit_runs(env: Mapping[str, str], count: int) -> list[Run]:
    return [timed(FETCHER, env) for _ in range(count)]


def s3_comparison(work: Path, size: int) -> dict[str, Run]:
    """Our fetcher against boto3's transfer manager, on a moto server on 127.0.0.1."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request log lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        **base_env(),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "HOME": str(work),
    }
    try:
        s3: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",  # noqa: S106
        )
        s3.create_bucket(Bucket="models")
        block = os.urandom(MIB)
        for index in range(4):
            s3.put_object(Bucket="models", Key=f"bench/shard-{index}.safetensors", Body=block * (size // 4 // MIB))
        s3.put_object(Bucket="models", Key="bench/config.json", Body=b"{}")
        ours = timed(FETCHER, fetcher_environment("s3://models/bench", work / "s3-cache", extra=env))
        script = (
            "import sys, boto3; from boto3.s3.transfer import TransferConfig;"
            "s3 = boto3.client('s3'); c = TransferConfig(max_concurrency=8, preferred_transfer_client='classic');"
            "[s3.download_file('models', o['Key'], sys.argv[1] + '/' + o['Key'].replace('/', '_'), Config=c)"
            " for o in s3.list_objects_v2(Bucket='models', Prefix='bench/')['Contents']]"
        )
        (work / "boto").mkdir()
        peer = timed([sys.executable, "-c", script, str(work / "boto")], env)
        return {"modelcache fetcher": ours, "boto3 download_file (s3transfer, 8 threads)": peer}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the Hub model")
    parser.add_argument(
        "--small-mib", type=int, default=128, help="a smaller model with as many shards, for RSS vs size"
    )
    parser.add_argument("--s3-mib", type=int, default=256, help="size of the S3 model")
    parser.add_argument("--pods", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelcache-bench-fetch-"))
    print(f"generating models under {work} ...", flush=True)
    big = HubRepo.single(
        "bench/model", write_sharded_model(work / "src-big", total_bytes=args.size_mib * MIB, shards=4)
    )
    small = HubRepo.single(
        "bench/small", write_sharded_model(work / "src-small", total_bytes=args.small_mib * MIB, shards=4, seed=1)
    )
    for repo in (big, small):
        for item in repo.commits[repo.main].values():
            _ = item.sha256, item.git_sha1  # computed before timing
    model_bytes = sum(f.size for f in big.commits[big.main].values())
    rows: list[tuple[str, Run]] = []
    with HubServer([big, small]) as hub:
        env = {**base_env(), "HF_ENDPOINT": hub.url}
        single_cache = work / "single"
        single_cache.mkdir()
        ours_env = fetcher_environment("hf://bench/model", single_cache, extra=env)
        rows.append(("modelcache fetcher (verified)", timed(FETCHER, ours_env)))
        for name, run in hub_peers(hub, big, work).items():
            rows.append((name, run))
        pin = work / "pin"  # the pod's modelcache-pin emptyDir: a hit also links the pod's version there
        pin.mkdir()
        hits = hit_runs({**ours_env, wire.PIN_PATH_ENV: str(pin / "model")}, 20)
        small_cache = work / "small"
        small_cache.mkdir()
        small_env = fetcher_environment("hf://bench/small", small_cache, extra=env)
        small_run = timed(FETCHER, small_env)
        shared = work / "shared"
        shared.mkdir()
        c_wall, c_bytes, c_samples, c_bad = concurrent(hub, big, shared, args.pods)
    s3_rows = s3_comparison(work, args.s3_mib * MIB)
    print_tables(model_bytes, rows, hits, small_run, args, (c_wall, c_bytes, c_samples, c_bad), s3_rows)
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


def print_tables(
    model_bytes: int,
    rows: list[tuple[str, Run]],
    hits: list[Run],
    small_run: Run,
    args: argparse.Namespace,
    concurrent_result: tuple[float, int, int, int],
    s3_rows: dict[str, Run],
) -> None:
    print(f"\nHub model: {model_bytes / MIB:,.0f} MiB in 4 shards + 3 small files; {os.cpu_count()} CPUs\n")
    print("| single cold copy from the local Hub | wall s | MB/s | peak RSS MB | exit |")
    print("|---|---:|---:|---:|---:|")
    for name, run in rows:
        print(f"| {name} | {run.wall:.2f} | {model_bytes / 1e6 / run.wall:,.0f} | {run.max_rss_mb:.0f} | {run.code} |")
    ours = rows[0][1]
    curl = dict(rows).get("raw curl, sequential")
    peers = [run for name, run in rows[1:] if not name.startswith("raw curl")]
    wall, origin, samples, bad = concurrent_result
    hit_walls = [h.wall for h in hits]
    print(f"\n| {args.pods} fetchers at once on one directory | value |")
    print("|---|---:|")
    print(f"| wall s | {wall:.2f} |")
    print(f"| origin bytes / model size | {origin / model_bytes:.3f} |")
    print(f"| samples after the first success / incomplete | {samples} / {bad} |")
    print("\n| cache hit (20 runs) | value |")
    print("|---|---:|")
    print(f"| median process wall ms | {statistics.median(hit_walls) * 1000:.0f} |")
    print(f"| peak RSS MB (max) | {max(h.max_rss_mb for h in hits):.0f} |")
    print("\n| S3 on moto, same objects | wall s | peak RSS MB |")
    print("|---|---:|---:|")
    for name, run in s3_rows.items():
        print(f"| {name} | {run.wall:.2f} | {run.max_rss_mb:.0f} |")
    fastest_peer = min((r.wall for r in peers), default=float("inf"))
    print("\n| target | goal | measured |")
    print("|---|---|---|")
    print(f"| single cold copy vs fastest peer | <= 1.0x wall | {ours.wall / fastest_peer:.2f}x |")
    if curl:
        print(f"| single cold copy vs raw curl | >= 0.7x speed | {curl.wall / ours.wall:.2f}x |")
    print(f"| {args.pods} at once: origin bytes | <= 1.02x model | {origin / model_bytes:.3f}x |")
    print(f"| {args.pods} at once: wall | <= 1.2x single | {wall / ours.wall:.2f}x |")
    print(f"| {args.pods} at once: incomplete samples | 0 | {bad} of {samples} |")
    print(f"| cache hit median wall | <= 150 ms | {statistics.median(hit_walls) * 1000:.0f} ms |")
    print(f"| cache hit peak RSS | <= 50 MB | {max(h.max_rss_mb for h in hits):.0f} MB |")
    print(f"| cold peak RSS, {args.size_mib} MiB model | <= 200 MB | {ours.max_rss_mb:.0f} MB |")
    print(f"| cold peak RSS, {args.small_mib} MiB model | same as above | {small_run.max_rss_mb:.0f} MB |")


if __name__ == "__main__":
    sys.exit(main())
