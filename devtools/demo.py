"""`make demo`: the webhook and the fetcher, run locally, on the example workloads in examples/.

Part 1 starts `python -m webhook` with a freshly generated certificate on 127.0.0.1, sends every example
through it as the apiserver would (an AdmissionReview over TLS, verified against our CA), and prints
the decision and the pod before/after as a diff. Then sends a mutated pod again to show that a second
pass changes nothing.

Part 2 starts a local server that speaks the Hub's HTTP protocol with a small real model, runs four
fetchers at once on one cache directory, as four pods would, shows that one downloaded while three
waited, and loads the result offline with huggingface_hub (HF_HUB_OFFLINE=1). No cluster, no internet.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from devtools.admission import admission_review, pod_from_manifest
from devtools.fetcher_env import fetcher_environment, start_fetcher
from devtools.hubserver import HubRepo, HubServer
from devtools.tinymodel import tiny_model_files
from devtools.webhook_process import RunningWebhook, run_webhook
from webhook.review import decode_patch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
_COLOR = sys.stdout.isatty()


def _paint(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _COLOR else text


def post_review(webhook: RunningWebhook, review: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        webhook.url + "/mutate",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=webhook.client_context(), timeout=10) as response:
        return dict(json.load(response))


def show(title: str, webhook: RunningWebhook, pod: dict[str, Any], namespace: str) -> dict[str, Any]:
    print(_paint(f"\n=== {title}", "1"))
    response = post_review(webhook, admission_review(pod, namespace))["response"]
    patch = decode_patch({"response": response})
    if not response["allowed"]:
        print(_paint("decision: DENIED", "31"))
        print("message: " + response["status"]["message"])
        return pod
    print(_paint(f"decision: allowed, {len(patch)} patch operation(s)", "32"))
    for warning in response.get("warnings", []):
        print(_paint("warning: " + warning, "33"))
    after: dict[str, Any] = jsonpatch.apply_patch(pod, patch)
    before_lines = yaml.safe_dump(pod, sort_keys=False).splitlines()
    after_lines = yaml.safe_dump(after, sort_keys=False).splitlines()
    for line in difflib.unified_diff(before_lines, after_lines, "before", "after", n=2, lineterm=""):
        color = "32" if line.startswith("+") else "31" if line.startswith("-") else "36" if line.startswith("@") else ""
        print(_paint(line, color) if color else line)
    return after


def fetch_demo(workdir: Path) -> None:
    """Four pods, one cache, one download; then an offline consumer."""
    print(_paint("\n=== four fetchers start at once on one cache directory (as four pods would)", "1"))
    cache = workdir / "cache"
    cache.mkdir()
    with HubServer([HubRepo.single("demo/tiny-model", tiny_model_files())]) as hub:
        hub.faults.bytes_per_second = 8 * 1024  # ~4 s for the model: slow enough to see the others wait
        settings = {"HF_ENDPOINT": hub.url, "MODELCACHE_LOCK_POLL": "100ms", "MODELCACHE_LOCK_LOG_EVERY": "500ms"}
        logs = [workdir / f"pod-{i}.log" for i in range(4)]
        pods = [
            start_fetcher(
                fetcher_environment("hf://demo/tiny-model", cache, pod=f"pod-{i}", extra=settings), log=logs[i]
            )
            for i in range(4)
        ]
        codes = [p.wait(timeout=300) for p in pods]
        for i, code in enumerate(codes):
            message = (workdir / f"pod-{i}.termination-log").read_text()
            print(_paint(f"pod-{i}: exit {code}: ", "32" if code == 0 else "31") + message)
        waiting = next((line for log in logs for line in log.read_text().splitlines() if "held by" in line), "")
        if waiting:
            print(_paint("a waiter's log: ", "33") + waiting.split("] ", 1)[-1])
        model_bytes = sum(len(b) for b in tiny_model_files().values())
        print(f"the Hub served {hub.bytes_served} bytes for a model of {model_bytes} bytes")
    print(_paint("\n=== the app side: HF_HUB_OFFLINE=1, HF_HUB_CACHE=<cache>/hub, --model demo/tiny-model", "1"))
    script = (
        "from huggingface_hub import snapshot_download;"
        "from safetensors.numpy import load_file;"
        "from tokenizers import Tokenizer;"
        "p = snapshot_download('demo/tiny-model');"
        "w = load_file(p + '/model.safetensors');"
        "print('snapshot:', p);"
        "print('tensors:', {k: v.shape for k, v in w.items()});"
        "print('tokens of \\'hello world\\':', Tokenizer.from_file(p + '/tokenizer.json').encode('hello world').ids)"
    )
    env = {"HF_HUB_CACHE": str(cache / "hub"), "HF_HUB_OFFLINE": "1", "PATH": os.environ.get("PATH", "")}
    app = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    print(app.stdout.rstrip() or app.stderr)
    print(_paint("\n=== the cache volume", "1"))
    for path in sorted(cache.rglob("*")):
        relative = path.relative_to(cache)
        if relative.parts[0] == ".modelcache" and len(relative.parts) > 2:
            continue
        arrow = f" -> {os.readlink(path)}" if path.is_symlink() else ""
        print(f"  {relative}{arrow}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="modelcache-demo-") as tmp:
        print("starting the webhook on 127.0.0.1 with a fresh self-signed CA ...")
        with run_webhook(Path(tmp), log_file=Path(tmp) / "webhook.log") as webhook:
            print(f"webhook ready at {webhook.url} (TLS verified against {webhook.ca_file.name})")
            last_mutated: tuple[dict[str, Any], str] | None = None
            for path in sorted(EXAMPLES.glob("*.yaml")):
                manifest = yaml.safe_load(path.read_text())
                pod, namespace = pod_from_manifest(manifest)
                kind = manifest["kind"]
                after = show(f"{path.name} ({kind} in namespace {namespace})", webhook, pod, namespace)
                if after is not pod and last_mutated is None:
                    last_mutated = (after, namespace)
            if last_mutated is not None:
                show("the first mutated pod sent again (reinvocation): nothing to add", webhook, *last_mutated)
            print(_paint("\nwebhook log:", "1"))
            print((Path(tmp) / "webhook.log").read_text().rstrip())
        fetch_demo(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
