"""Benchmark of the webhook: `make bench-webhook` (python -m bench.webhook).

Over HTTPS with keep-alive on loopback, with a realistic pod (~5 KB, 3 containers): requests/s and
p50/p99 latency at fixed rates and at saturation, for the webhook and, in the same run, a no-op aiohttp
TLS handler (the floor). Then the webhook's peak RSS, and an in-process micro-benchmark of planning +
patch building. Prints markdown tables; results and the command go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.http_load import LoadResult, build_request, run_load
from devtools.admission import admission_review
from devtools.webhook_process import RunningWebhook, free_port, run_webhook, wait_ready, write_certificates
from webhook.config import Settings
from webhook.handlers import review_admission
from webhook.injection import decide

TARGETS = {
    "throughput vs no-op floor": ">= 80 %",
    "p99 at 500 reviews/s": "<= 5 ms",
    "planning + patch per review": "<= 0.3 ms",
    "webhook RSS": "<= 100 MB",
}


def realistic_pod() -> dict[str, Any]:
    """A vLLM pod as a Deployment makes it: 3 containers, probes, env, mounts, ~5 KB of JSON."""

    def container(name: str, image: str, port: int, extra_env: int) -> dict[str, Any]:
        return {
            "name": name,
            "image": image,
            "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--port", str(port), "--max-model-len", "8192"],
            "ports": [{"containerPort": port, "name": "http", "protocol": "TCP"}],
            "env": [{"name": f"SETTING_{i}", "value": f"value-{i}-" + "x" * 20} for i in range(extra_env)]
            + [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "resources": {"requests": {"cpu": "4", "memory": "32Gi"}, "limits": {"memory": "48Gi"}},
            "readinessProbe": {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/health", "port": port}, "initialDelaySeconds": 60},
            "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "config", "mountPath": "/etc/app"}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "llama-5d8f7c9b6-",
            "labels": {"app": "llama", "pod-template-hash": "5d8f7c9b6", "team": "inference", "tier": "serving"},
            "annotations": {
                "modelcache.io/model": "hf://meta-llama/Llama-3.1-8B-Instruct",
                "modelcache.io/include": "*.safetensors,*.json,tokenizer*",
                "modelcache.io/containers": "vllm",
                "modelcache.io/secret": "hf-token",
                "prometheus.io/scrape": "true",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "llama-5d8f7c9b6",
                    "uid": "0" * 36,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                container("vllm", "vllm/vllm-openai:v0.11.0", 8000, 12),
                container("router", "registry.example.com/router:1.4.2", 8080, 8),
                container("metrics", "prom/statsd-exporter:v0.28.0", 9102, 4),
            ],
            "volumes": [
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
                {"name": "config", "configMap": {"name": "llama-config"}},
            ],
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "serviceAccountName": "llama",
        },
    }


@contextmanager
def run_noop(workdir: Path) -> Iterator[RunningWebhook]:
    tls_dir = workdir / "noop-tls"
    ca_file = write_certificates(tls_dir)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.noop_server", "--port", str(port), "--tls-dir", str(tls_dir)]
    )
    server = RunningWebhook(url=f"https://127.0.0.1:{port}", ca_file=ca_file, tls_dir=tls_dir, process=process)
    try:
        wait_ready(server)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def load(server: RunningWebhook, body: bytes, *, rate: float | None, seconds: float, connections: int) -> LoadResult:
    port = int(server.url.rsplit(":", 1)[1])
    request = build_request("127.0.0.1", port, "/mutate", body)
    return asyncio.run(
        run_load(
            host="127.0.0.1",
            port=port,
            context=server.client_context(),
            request=request,
            connections=connections,
            seconds=seconds,
            rate=rate,
        )
    )


def micro_benchmark(pod: dict[str, Any], repeats: int = 5, number: int = 2000) -> dict[str, float]:
    """Median per-call milliseconds of decide() and of the whole review (parse + decide + encode)."""
    settings = Settings()
    body = json.dumps(admission_review(pod, "serving")).encode()
    results: dict[str, float] = {}
    for name, call in (
        ("planning + patch (decide)", lambda: decide(pod, settings=settings)),
        ("whole review, bytes in to dict out", lambda: review_admission(body, settings=settings)),
    ):
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(number):
                call()
            samples.append((time.perf_counter() - started) / number * 1000)
        results[name] = statistics.median(samples)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load step")
    parser.add_argument("--rounds", type=int, default=3, help="alternating saturation rounds per server")
    parser.add_argument("--rates", default="100,250,500,1000", help="fixed request rates per second")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    pod = realistic_pod()
    body = json.dumps(admission_review(pod, "serving")).encode()
    print(
        f"pod: {len(json.dumps(pod))} bytes of JSON, {len(pod['spec']['containers'])} containers; "
        f"review body {len(body)} bytes; {os.cpu_count()} CPUs; {args.seconds:g} s per step\n"
    )
    saturation: dict[str, list[LoadResult]] = {"no-op floor": [], "modelcache webhook": []}
    fixed: list[tuple[str, str, LoadResult]] = []
    with tempfile.TemporaryDirectory(prefix="modelcache-bench-") as tmp:
        env = {"MODELCACHE_LOG_LEVEL": "WARNING"}
        with run_noop(Path(tmp)) as floor, run_webhook(Path(tmp), env=env) as ours:
            servers = {"no-op floor": floor, "modelcache webhook": ours}
            for server in servers.values():
                load(server, body, rate=None, seconds=1.0, connections=8)  # warm-up
            # Alternate the servers so that both see the same machine (these machines are noisy).
            for _ in range(args.rounds):
                for label, server in servers.items():
                    saturation[label].append(load(server, body, rate=None, seconds=args.seconds, connections=32))
            for label, server in servers.items():
                for rate in rates:
                    result = load(server, body, rate=rate, seconds=args.seconds, connections=16)
                    fixed.append((label, f"{rate:g}/s", result))
            rss = peak_rss_mb(ours.process.pid)
    print_tables(saturation, fixed, rss, micro_benchmark(pod))
    return 0


def print_tables(
    saturation: dict[str, list[LoadResult]],
    fixed: list[tuple[str, str, LoadResult]],
    rss: tuple[float, float],
    micro: dict[str, float],
) -> None:
    print("| server | load | achieved req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|")
    medians = {}
    for label, results in saturation.items():
        median = sorted(results, key=lambda r: r.rate)[len(results) // 2]
        medians[label] = median
        rates = ", ".join(f"{r.rate:,.0f}" for r in results)
        print(
            f"| {label} | saturation, 32 conns (median of {rates}) | {median.rate:,.0f} | "
            f"{median.percentile(0.5) * 1000:.2f} | {median.percentile(0.99) * 1000:.2f} | "
            f"{sum(r.failed for r in results)} |"
        )
    for label, mode, result in fixed:
        print(
            f"| {label} | {mode}, 16 conns | {result.rate:,.0f} | {result.percentile(0.5) * 1000:.2f} | "
            f"{result.percentile(0.99) * 1000:.2f} | {result.failed} |"
        )
    print("\n| in-process (median of 5 x 2000 calls) | ms per review |")
    print("|---|---:|")
    for name, ms in micro.items():
        print(f"| {name} | {ms:.3f} |")
    at_500 = next((r for label, mode, r in fixed if label != "no-op floor" and mode == "500/s"), None)
    ratio = medians["modelcache webhook"].rate / medians["no-op floor"].rate
    measured = {
        "throughput vs no-op floor": f"{ratio * 100:.0f} %",
        "p99 at 500 reviews/s": f"{at_500.percentile(0.99) * 1000:.2f} ms" if at_500 else "not run",
        "planning + patch per review": f"{micro['planning + patch (decide)']:.3f} ms",
        "webhook RSS": f"{rss[0]:.0f} MB now, {rss[1]:.0f} MB peak",
    }
    print("\n| target | goal | measured |")
    print("|---|---|---|")
    for name, goal in TARGETS.items():
        print(f"| {name} | {goal} | {measured[name]} |")


if __name__ == "__main__":
    sys.exit(main())
