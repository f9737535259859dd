"""`python -m bench.measure CMD...`: run CMD, print its wall time, peak RSS and exit code as JSON.

Why a separate small process: on Linux a child's ru_maxrss starts from its parent's high-water mark at
exec. Spawned straight from a benchmark that holds a model server (or moto's objects) in memory, every
child would seem to use that much. Spawned from this small launcher, it is measured on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time


def main() -> int:
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        tail = errors.read().decode(errors="replace")[-2000:] if code else ""
    print(json.dumps({"wall": wall, "max_rss_kb": usage.ru_maxrss, "code": code, "stderr": tail}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
