"""A Lease candidate in its own process, for tests of leader election with real processes and clocks.

    python -m devtools.lease_candidate NAME DURATION DEADLINE RETRY     (KUBECONFIG names the API)

It runs modelcache's LeaderLoop (the one the controller and the cache agent run) and prints one JSON
line per change: ``{"identity": ..., "leading": true, "monotonic": ...}``. CLOCK_MONOTONIC is one clock
for every process of the machine (libfaketime shifts only the wall clock here), so a test can lay the
lines of several candidates side by side and check that no two ever led at once. It stops on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from types import FrameType

from modelcache.runtime.kube import connect
from modelcache.runtime.leader import LeaderElector, LeaderLoop
from modelcache.runtime.timings import LeaseTimings


def main() -> None:
    name, duration, deadline, retry = sys.argv[1], *map(float, sys.argv[2:5])
    elector = LeaderElector(
        connect(),
        namespace="modelcache-system",
        name="test-lease",
        identity=name,
        timings=LeaseTimings(duration, deadline, retry),
    )
    stop = threading.Event()

    def report(leading: bool) -> None:
        line = {"identity": elector.identity, "leading": leading, "monotonic": time.monotonic(), "wall": time.time()}
        print(json.dumps(line), flush=True)

    def on_term(_: int, __: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    loop = LeaderLoop(elector).start()
    report(False)
    was = False
    while not stop.wait(0.02):  # acting means asking is_leader, as the controller's work does between actions
        now = elector.is_leader
        if now != was:
            report(now)
        was = now
    loop.stop()


if __name__ == "__main__":
    main()
