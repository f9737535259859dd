"""Run a command as another UID and GID, with this Python reachable: pods of several UIDs on one volume.

    unshare --mount --propagation private python -m devtools.as_user UID GID -- COMMAND...

A test machine's interpreter often lives under a directory only root may enter (``/root/.pyenv``). In
the private mount namespace ``unshare`` gives it, this lays a tmpfs (mode 0755) over the first such
directory and binds back only the entry the interpreter lives in, so another UID reaches the
interpreter and nothing else there; the machine's own mounts are not touched. Then it drops to UID and
GID (no supplementary groups, no capabilities) and executes COMMAND. Must start as root.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path


def closed_ancestor(path: Path) -> Path | None:
    """The outermost directory on the way to path that other users may not enter, or None."""
    for directory in reversed(path.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            return directory
    return None


def open_way(target: Path) -> None:
    """Make target reachable for every UID in this mount namespace, hiding the rest of what was closed."""
    while (closed := closed_ancestor(target)) is not None:
        entry = closed / target.relative_to(closed).parts[0]
        keep = Path(tempfile.mkdtemp(prefix="as-user-"))
        subprocess.run(["mount", "--bind", str(entry), str(keep)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(closed)], check=True)
        (closed / entry.name).mkdir()
        subprocess.run(["mount", "--bind", str(keep), str(closed / entry.name)], check=True)


def main() -> int:
    uid, gid, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        sys.exit(__doc__)
    open_way(Path(sys.base_prefix).resolve() / "bin")
    os.setgroups([])
    os.setgid(int(gid))
    os.setuid(int(uid))
    os.execvp(command[0], command)  # noqa: S606 (the test's own command, as argv: no shell)


if __name__ == "__main__":
    sys.exit(main())
