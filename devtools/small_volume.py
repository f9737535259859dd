"""Run a command on a small real volume that fills up while it runs: a tmpfs in a mount namespace of its own.

    python -m devtools.small_volume SIZE DIR FILL_WHEN [--again] -- COMMAND...

Mounts a tmpfs of SIZE (``8m``) on DIR, visible only to this process and its children (nothing leaks
into the machine's mounts), runs COMMAND, and as soon as a file matching the glob FILL_WHEN appears
under DIR (a ``*.part`` of a download), fills the rest of the volume, so the command's next write gets a
real ENOSPC. Prints what it did to stderr, exits with the command's status. With ``--again``, once the
command ended it prints ``small_volume: first run exited N`` and every file left under DIR with its
size, frees the space it filled and runs COMMAND once more on the same volume (its status is then the
exit status). Needs root or unprivileged user namespaces (the caller re-executes it under ``unshare``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def fill(directory: Path) -> int:
    """Write zeros until the volume is full; the bytes written."""
    written = 0
    block = bytes(64 << 10)
    with (directory / ".filler").open("wb", buffering=0) as out:
        try:
            while True:
                written += out.write(block)
        except OSError:
            pass
        while True:  # the last partial blocks, down to nothing
            try:
                written += out.write(b"\0" * 512)
            except OSError:
                break
    return written


def main() -> int:
    size, directory, pattern, *rest = sys.argv[1:]
    again = rest[:1] == ["--again"]
    separator, *command = rest[1:] if again else rest
    if separator != "--" or not command:
        sys.exit(__doc__)
    root = Path(directory)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(root)], check=True)
    code = run_filling(command, root, pattern)
    if not again:
        return code
    sys.stderr.write(f"small_volume: first run exited {code}\n")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".filler"):
        sys.stderr.write(f"small_volume: left {path.relative_to(root)} {path.stat().st_size}\n")
    (root / ".filler").unlink(missing_ok=True)
    return subprocess.run(command, check=False).returncode


def run_filling(command: list[str], root: Path, pattern: str) -> int:
    child = subprocess.Popen(command)
    filled = False
    while child.poll() is None:
        if not filled and any(root.rglob(pattern)):
            filled = True
            sys.stderr.write(f"small_volume: filled {fill(root)} bytes once {pattern} appeared\n")
        time.sleep(0.005)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
