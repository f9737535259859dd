"""Compare this tree with an earlier revision: the fetcher's cache-hit path and the webhook's review cost.

    .venv/bin/python -m bench.compare --base 219d527 [--runs 30] [--reviews 3000]

The earlier revision is checked out into a temporary git worktree. Both trees get their bytecode
compiled first (the images compile theirs at build time; without it, a tree whose files just changed
pays for compiling them on every start). Then, in the same run:

- the hit path: `python -m fetcher` on a ready model, both trees interleaved, median and minimum wall
  time of `--runs` starts each;
- instructions (valgrind callgrind, where installed; repeatable whatever else the machine does) of one
  hit, and of one admission review (`review_admission` on the benchmark's realistic pod, the difference
  between `--reviews` reviews and none, divided);
- the webhook server's CPU time per review at saturation (32 connections, 4 s per round, `--rounds`
  rounds interleaved), and the size of its answer: throughput on this shared machine moves with its
  neighbours, the CPU a review costs the server much less.

Prints a markdown table with the ratios new / base.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools.fetcher_env import fetcher_environment
from devtools.hubserver import HubRepo, HubServer
from devtools.tinymodel import tiny_model_files

ROOT = Path(__file__).resolve().parent.parent
REVIEW = """
import json, sys
from bench.webhook import realistic_pod
from devtools.admission import admission_review
from webhook.config import Settings
from webhook.handlers import review_admission
body = json.dumps(admission_review(realistic_pod(), "serving")).encode()
settings = Settings()
for _ in range(int(sys.argv[1])):
    review_admission(body, settings=settings)
"""
SERVER_CPU = """
import json, os, sys, tempfile
from pathlib import Path
import orjson
from bench.webhook import load, realistic_pod
from devtools.admission import admission_review
from devtools.webhook_process import run_webhook
from webhook.config import Settings
from webhook.handlers import review_admission

def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

body = json.dumps(admission_review(realistic_pod(), "serving")).encode()
answer = len(orjson.dumps(review_admission(body, settings=Settings()).body))
with tempfile.TemporaryDirectory() as tmp, run_webhook(Path(tmp), env={"MODELCACHE_LOG_LEVEL": "WARNING"}) as hook:
    load(hook, body, rate=None, seconds=1, connections=32)
    before = cpu(hook.process.pid)
    result = load(hook, body, rate=None, seconds=4, connections=32)
    used = cpu(hook.process.pid) - before
print(json.dumps({"ms_per_review": 1000 * used / (result.sent - result.failed), "answer_bytes": answer}))
"""


def compile_tree(tree: Path) -> None:
    packages = [str(tree / name) for name in ("modelcache", "webhook", "fetcher", "certs", "controller", "admin")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(p for p in packages if Path(p).is_dir())], check=True)


def hit_env(tree: Path, work: Path, hub: HubServer) -> dict[str, str]:
    cache = work / tree.name / "cache"
    cache.mkdir(parents=True)
    (cache.parent / "pin").mkdir()
    env = fetcher_environment("hf://tiny/model", cache, extra={"HF_ENDPOINT": hub.url})
    env |= {"MODELCACHE_PIN_PATH": str(cache.parent / "pin" / "model"), "PYTHONPATH": str(tree)}
    result = subprocess.run([sys.executable, "-m", "fetcher"], env=env, cwd=tree, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{tree}: the first fetch failed: {result.stderr.decode()[-500:]}")
    return env


def time_hits(trees: dict[str, Path], envs: dict[str, dict[str, str]], runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(runs):
        for name, tree in trees.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "fetcher"], env=envs[name], cwd=tree, capture_output=True, check=True)
            times[name].append(time.perf_counter() - started)
    return times


def instructions(command: list[str], *, env: dict[str, str], cwd: Path) -> int | None:
    if shutil.which("valgrind") is None:
        return None
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in result.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    return None


def per_review(tree: Path, reviews: int) -> int | None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    script = tree / ".bench-review.py"
    script.write_text(REVIEW)
    try:
        none = instructions([sys.executable, str(script), "0"], env=env, cwd=tree)
        many = instructions([sys.executable, str(script), str(reviews)], env=env, cwd=tree)
    finally:
        script.unlink()
    return None if none is None or many is None else (many - none) // reviews


def server_cpu(trees: dict[str, Path], rounds: int) -> dict[str, tuple[list[float], int]]:
    """CPU ms per review of each tree's webhook server, `rounds` times interleaved; and its answer's size."""
    found: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            script = tree / ".bench-cpu.py"
            script.write_text(SERVER_CPU)
            try:
                out = subprocess.run(
                    [sys.executable, str(script)],
                    env={**os.environ, "PYTHONPATH": str(tree)},
                    cwd=tree,
                    capture_output=True,
                    text=True,
                    check=True,
                )
            finally:
                script.unlink()
            measured = json.loads(out.stdout)
            found[name][0].append(measured["ms_per_review"])
            found[name] = (found[name][0], measured["answer_bytes"])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the git revision to compare with")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--reviews", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelcache-compare-"))
    base = work / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base], check=True)
    try:
        trees = {"base": base, "new": ROOT}
        for tree in trees.values():
            compile_tree(tree)
        with HubServer([HubRepo.single("tiny/model", tiny_model_files())]) as hub:
            envs = {name: hit_env(tree, work, hub) for name, tree in trees.items()}
            times = time_hits(trees, envs, args.runs)
            hit_instructions = {
                name: instructions([sys.executable, "-m", "fetcher"], env=envs[name], cwd=tree)
                for name, tree in trees.items()
            }
        review_instructions = {name: per_review(tree, args.reviews) for name, tree in trees.items()}
        cpu = server_cpu(trees, args.rounds)
        print_table(args.base, times, hit_instructions, review_instructions, cpu)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def print_table(
    base: str,
    times: dict[str, list[float]],
    hits: dict[str, int | None],
    reviews: dict[str, int | None],
    cpu: dict[str, tuple[list[float], int]],
) -> None:
    def ratio(new: float | None, old: float | None) -> str:
        return f"{new / old:.3f}" if new and old else "-"

    median = {name: statistics.median(values) * 1000 for name, values in times.items()}
    fastest = {name: min(values) * 1000 for name, values in times.items()}
    rows = [
        ("cache hit, median wall ms", median["base"], median["new"]),
        ("cache hit, fastest wall ms", fastest["base"], fastest["new"]),
        ("cache hit, instructions (M)", _millions(hits["base"]), _millions(hits["new"])),
        ("one admission review, instructions (k)", _thousands(reviews["base"]), _thousands(reviews["new"])),
        (
            "webhook server, CPU ms per review (median)",
            statistics.median(cpu["base"][0]),
            statistics.median(cpu["new"][0]),
        ),
        ("webhook answer, bytes", float(cpu["base"][1]), float(cpu["new"][1])),
    ]
    print(f"| measure | base {base} | this tree | new / base |")
    print("|---|---:|---:|---:|")
    for label, old, new in rows:
        shown_old = f"{old:,.3f}" if old is not None and old < 10 else (f"{old:,.1f}" if old is not None else "-")
        shown_new = f"{new:,.3f}" if new is not None and new < 10 else (f"{new:,.1f}" if new is not None else "-")
        print(f"| {label} | {shown_old} | {shown_new} | {ratio(new, old)} |")
    print(json.dumps({"runs": len(times["base"])}), file=sys.stderr)


def _millions(value: int | None) -> float | None:
    return None if value is None else value / 1e6


def _thousands(value: int | None) -> float | None:
    return None if value is None else value / 1e3


if __name__ == "__main__":
    main()
