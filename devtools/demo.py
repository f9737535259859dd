"""`make demo`: the webhook, run locally over HTTPS, on the example workloads in examples/.

Starts `python -m webhook` with a freshly generated certificate on 127.0.0.1, sends every example
through it as the apiserver would (an AdmissionReview over TLS, verified against our CA), and prints
the decision and the pod before/after as a diff. Then sends a mutated pod again to show that a second
pass changes nothing. No cluster, no internet.
"""

from __future__ import annotations

import difflib
import json
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from devtools.admission import admission_review, pod_from_manifest
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
