"""Check that no function of the shipped packages runs over 60 lines without saying why.

    python -m devtools.function_lengths [--limit 60]      (run by `make lint`)

A function longer than the limit is split, or carries a one-line reason in a comment on the line
above its ``def``: ``# long: <why it reads better whole>``. Exit 1 with one line per offender.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("modelcache", "webhook", "fetcher", "certs")
REASON = "# long:"


def offenders(limit: int) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - first + 1
                above = lines[first - 2].strip() if first >= 2 else ""
                if length > limit and not above.startswith(REASON):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} is {length} lines (> {limit})")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=60)
    found = offenders(parser.parse_args().limit)
    for line in found:
        print(f"{line}: split it, or say why above it with '{REASON} ...'")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
