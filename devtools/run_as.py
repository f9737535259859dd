"""Run one of our programs under another UID, for tests of what one UID leaves another (a purge under
another UID than the fetchers'). The interpreter here may live where that UID cannot read (a root-only
home), so the program's modules are imported first, as root, and only then does the process switch.

    python -m devtools.run_as UID MODULE [ARGS...]      (group 0, as the images run)
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys

# What each program imports, also lazily (a lazy import after the switch could not read the stdlib).
PRELOAD = {
    "modelcache": [
        "modelcache.cli.main",
        "modelcache.cache.purge",
        "modelcache.cli.progress",
        "modelcache.cache.removal",
        "modelcache.cache.inventory",
        "modelcache.runtime.logs",
        "encodings.idna",
        "locale",
        "json.encoder",
        "tempfile",
        "shutil",
        "uuid",
    ],
}


def main() -> None:
    uid, module, *args = sys.argv[1:]
    for name in PRELOAD[module]:
        importlib.import_module(name)
    os.setgroups([])
    os.setgid(0)
    os.setuid(int(uid))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
