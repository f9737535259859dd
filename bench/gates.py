"""Seconds each pod holds a node before its model is ready, with and without the scheduling gate:
`python -m bench.gates`.

A Deployment's `--replicas` pods of a cold model, created through the real webhook process, with the
real controller loop, against the API stand-in. This script plays the rest of the cluster: the
scheduler binds a pod as soon as it has no scheduling gate; the kubelet then runs the pod's init
container, the real fetcher, into one cache directory; the Job controller runs a Job's pod the same way
and marks the Job Complete when its fetcher succeeds. The model comes from the local Hub server with
every response capped (`--cap-mb`), as a remote origin would, so the download takes a few seconds.

- init container only (today, and without the annotation): every pod is bound at once and holds its
  node while one of them downloads and the others wait for its lock;
- with `modelcache.io/wait-for-model: "true"`: the pods are gated, the controller's fetch Job downloads,
  the gate is lifted, and each pod is bound only then; its init container is a cache hit.

Also the admission cost of the gate check: the whole review of a realistic pod with the annotation
(the check reads the webhook's in-memory view of 1000 CachedModels) against the same pod without it.
Interleaved, medians of `--rounds`; prints markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonpatch

from bench.fetch import FETCHER, MIB, base_env
from devtools.admission import admission_review
from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubRepo, HubServer
from devtools.kubeapi import KubeApi
from devtools.tinymodel import write_sharded_model
from devtools.webhook_process import RunningWebhook, run_webhook
from modelcache.contract.annotation import WAIT_ANNOTATION
from modelcache.controller.__main__ import Controller
from modelcache.controller.config import ControllerSettings
from webhook.review import decode_patch

SOURCE = "hf://bench/model"
NS = "modelcache-system"


@dataclass
class Pod:
    name: str
    created: float
    bound: float | None = None
    ready: float | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--cap-mb", type=float, default=20.0, help="per-connection cap of the origin, MB/s")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # the stand-in's watches cut at shutdown
    work = Path(tempfile.mkdtemp(prefix="bench-gates-"))
    try:
        repo = HubRepo.single(
            "bench/model", write_sharded_model(work / "src", total_bytes=args.size_mib * MIB, shards=2)
        )
        for item in repo.commits[repo.main].values():
            _ = item.sha256, item.git_sha1
        results: dict[str, list[list[Pod]]] = {"init container only": [], "scheduling gate": []}
        with HubServer([repo]) as hub:
            hub.faults.bytes_per_second = args.cap_mb * 1e6
            for _ in range(args.rounds):
                for mode in results:
                    results[mode].append(one_rollout(hub, work, args.replicas, gated=mode == "scheduling gate"))
        print_rollouts(results, args)
        print_admission()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def one_rollout(hub: HubServer, work: Path, replicas: int, *, gated: bool) -> list[Pod]:
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir()
    with KubeApi() as api:
        serving_volume(api)
        controller = Controller(api.client(), ControllerSettings(identity="bench", manage_certificates=False))
        stop = threading.Event()
        loop = threading.Thread(target=_passes, args=(controller, stop), daemon=True)
        loop.start()
        time.sleep(0.5)  # the first pass publishes the volume status
        try:
            hook = work / "hook"
            hook.mkdir(exist_ok=True)
            with run_webhook(hook, env=_watching(api, work)) as webhook:
                return _run(api, webhook, hub, cache, replicas, gated)
        finally:
            stop.set()
            loop.join()


def _passes(controller: Controller, stop: threading.Event) -> None:
    while not stop.is_set():
        controller.elector.try_acquire_or_renew()
        controller.step(datetime.now(UTC))
        stop.wait(0.1)


def _run(api: KubeApi, webhook: RunningWebhook, hub: HubServer, cache: Path, replicas: int, gated: bool) -> list[Pod]:
    pods = [_admit(api, webhook, f"llm-{i}", gated) for i in range(replicas)]
    jobs: dict[str, subprocess.Popen[bytes]] = {}
    deadline = time.monotonic() + 600
    while any(p.ready is None for p in pods):
        if time.monotonic() > deadline:
            raise SystemExit("the rollout did not finish in 10 minutes")
        for pod in pods:
            _schedule_and_run(api, hub, cache, pod)
        _run_jobs(api, hub, cache, jobs)
        time.sleep(0.02)
    return pods


def _admit(api: KubeApi, webhook: RunningWebhook, name: str, gated: bool) -> Pod:
    annotations = {"modelcache.io/model": SOURCE} | ({WAIT_ANNOTATION: "true"} if gated else {})
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations},
                            "spec": {"containers": [{"name": "app", "image": "vllm/vllm-openai:v0.11.0"}]}}  # fmt: skip
    answer = _review(webhook, body)
    if not answer["allowed"]:
        raise SystemExit(f"the webhook refused the pod: {answer['status']['message']}")
    stored = jsonpatch.apply_patch(copy.deepcopy(body), decode_patch({"response": answer}))
    stored["metadata"]["namespace"] = "serving"
    api.create(stored)
    api.set_status("Pod", name, {"phase": "Pending"}, namespace="serving")
    return Pod(name, time.monotonic())


def _review(webhook: RunningWebhook, pod: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    request = urllib.request.Request(
        webhook.url + "/mutate",
        data=json.dumps(admission_review(pod, "serving")).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=webhook.client_context(), timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())["response"]
    return answer


def _schedule_and_run(api: KubeApi, hub: HubServer, cache: Path, pod: Pod) -> None:
    """The scheduler binds a pod without gates; the kubelet runs its fetcher, then it is ready."""
    if pod.bound is None:
        stored = api.get("Pod", pod.name, "serving") or {}
        if not stored.get("spec", {}).get("schedulingGates"):
            pod.bound = time.monotonic()
            pod.process = _fetcher(hub, cache, pod.name)
    elif pod.ready is None and pod.process is not None and pod.process.poll() is not None:
        if pod.process.returncode != 0:
            raise SystemExit(f"the fetcher of {pod.name} failed")
        pod.ready = time.monotonic()


def _run_jobs(api: KubeApi, hub: HubServer, cache: Path, jobs: dict[str, subprocess.Popen[bytes]]) -> None:
    """The Job controller and the kubelet of the fetch Jobs' pods."""
    for job in api.list("Job"):
        name = job["metadata"]["name"]
        if name not in jobs:
            jobs[name] = _fetcher(hub, cache, name)
        elif jobs[name].poll() == 0 and not job.get("status"):
            complete = {"type": "Complete", "status": "True"}
            api.set_status("Job", name, {"conditions": [complete], "succeeded": 1}, namespace="serving")


def _fetcher(hub: HubServer, cache: Path, pod: str) -> subprocess.Popen[bytes]:
    env = fetcher_environment(SOURCE, cache, pod=pod, extra={**base_env(), "HF_ENDPOINT": hub.url})
    return subprocess.Popen(FETCHER, env=env, stderr=subprocess.DEVNULL)


def serving_volume(api: KubeApi) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "modelcache", "namespace": "serving"},
             "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}}}  # fmt: skip
    api.create(claim)
    api.set_status("PersistentVolumeClaim", "modelcache", {"phase": "Bound"}, namespace="serving", volumeName="pv-1")


def _watching(api: KubeApi, work: Path) -> dict[str, str]:
    token = work / "token"
    token.write_text(api.token)
    return {
        "MODELCACHE_VOLUME_STATUS": f"{NS}/modelcache-volumes",
        "MODELCACHE_KUBE_API_URL": api.url,
        "MODELCACHE_KUBE_TOKEN_FILE": str(token),
        "MODELCACHE_LOG_LEVEL": "WARNING",
    }


def print_rollouts(results: dict[str, list[list[Pod]]], args: argparse.Namespace) -> None:
    print(f"\n{args.replicas} replicas, a cold {args.size_mib} MiB model, origin capped at {args.cap_mb:g} MB/s "
          f"per connection; medians of {args.rounds} rounds\n")  # fmt: skip
    print("| mode | bound before the model is ready, per pod: median s | max s | all pods ready after s |")
    print("|---|---:|---:|---:|")
    for mode, rounds in results.items():
        held = [p.ready - p.bound for pods in rounds for p in pods if p.ready is not None and p.bound is not None]
        total = [max(p.ready for p in pods if p.ready) - min(p.created for p in pods) for pods in rounds]
        print(f"| {mode} | {statistics.median(held):.2f} | {max(held):.2f} | {statistics.median(total):.2f} |")


def print_admission(reviews: int = 3000, models: int = 1000) -> None:
    from bench.webhook import realistic_pod
    from webhook.config import Settings
    from webhook.handlers import review_admission
    from webhook.volume_status import VolumeStatusWatcher

    settings = Settings(volume_status=f"{NS}/modelcache-volumes", kube_api_url="http://127.0.0.1:1")
    watcher = VolumeStatusWatcher(settings)
    from modelcache.contract.volumes import NamespaceVolume, VolumeStatus

    watcher.status = VolumeStatus(mode="existing", claim="modelcache", updated=datetime.now(UTC),
                                  namespaces={"serving": NamespaceVolume("ready", "")})  # fmt: skip
    watcher.ready_in = {f"hf_org_model-{i}_main_{i:016x}": frozenset({"serving/modelcache"}) for i in range(models)}
    plain = realistic_pod()
    waiting = copy.deepcopy(plain)
    waiting["metadata"]["annotations"][WAIT_ANNOTATION] = "true"
    timings: dict[str, list[float]] = {"without the annotation": [], "modelcache.io/wait-for-model: true": []}
    bodies = {
        name: json.dumps(admission_review(pod, "serving")).encode()
        for name, pod in zip(timings, (plain, waiting), strict=True)
    }
    for _ in range(reviews):
        for name, body in bodies.items():
            started = time.perf_counter()
            review_admission(body, settings=settings, volumes=watcher)
            timings[name].append((time.perf_counter() - started) * 1e6)
    print(f"\n| whole review of a realistic pod, {reviews} each, interleaved | median us | p99 us |")
    print("|---|---:|---:|")
    for name, values in timings.items():
        ordered = sorted(values)
        print(f"| {name} | {statistics.median(ordered):.0f} | {ordered[int(len(ordered) * 0.99)]:.0f} |")


if __name__ == "__main__":
    main()
    sys.exit(0)
