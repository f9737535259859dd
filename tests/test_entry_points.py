"""Every program we ship answers --help with what it reads, and exits 0; none starts work on it."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from modelcache.agent.config import AgentSettings
from modelcache.contract import wire
from modelcache.controller.config import ControllerSettings
from webhook.config import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLEAN = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "KUBECONFIG": "/nonexistent"}  # no settings, no cluster


def names_of(cls: type) -> list[str]:
    return [f"MODELCACHE_{f.name.upper()}" for f in fields(cls)]


def fetcher_names() -> set[str]:
    """Every MODELCACHE_* variable fetcher/config.py reads, as a literal or a wire constant."""
    source = (ROOT / "fetcher" / "config.py").read_text()
    names = set(re.findall(r'"(MODELCACHE_[A-Z_]+)"', source))
    names |= {getattr(wire, constant) for constant in re.findall(r"wire\.([A-Z_]+_ENV)\b", source)}
    return {name for name in names if name.startswith("MODELCACHE_")}


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=CLEAN, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param([str(BIN / "modelcache-webhook"), "--help"], names_of(Settings), id="modelcache-webhook"),
        pytest.param([sys.executable, "-m", "webhook", "-h"], names_of(Settings), id="python -m webhook"),
        pytest.param(
            [str(BIN / "modelcache-controller"), "--help"], names_of(ControllerSettings), id="modelcache-controller"
        ),
        pytest.param([str(BIN / "modelcache-fetch"), "--help"], sorted(fetcher_names()), id="modelcache-fetch"),
        pytest.param([sys.executable, "-m", "fetcher", "--help"], sorted(fetcher_names()), id="python -m fetcher"),
        pytest.param([str(BIN / "modelcache"), "agent", "--help"], names_of(AgentSettings), id="modelcache agent"),
        pytest.param(
            [sys.executable, "-m", "modelcache.agent", "--help"],
            names_of(AgentSettings),
            id="python -m modelcache.agent",
        ),
        pytest.param([str(BIN / "modelcache"), "--help"], ["ls", "prefetch", "purge", "rm", "agent"], id="modelcache"),
        pytest.param([sys.executable, "-m", "certs", "--help"], ["local", "cluster"], id="python -m certs"),
    ],
)
def test_every_entry_point_prints_what_it_reads_and_exits_0(command: list[str], expected: list[str]) -> None:
    result = run(command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    missing = [name for name in expected if name not in result.stdout]
    assert missing == []


@pytest.mark.parametrize(
    "program",
    [["modelcache-webhook"], ["modelcache-controller"], ["modelcache-fetch"]],
    ids=lambda p: p[0],
)
def test_an_argument_is_refused_with_a_pointer_to_help(program: list[str]) -> None:
    result = run([str(BIN / program[0]), "--serve"])
    assert result.returncode == 2
    assert "takes no arguments" in result.stderr
    assert f"{program[0]} --help" in result.stderr
