"""The reference docs cover everything a user can set: no setting or chart value goes undocumented."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcache.agent.config import AgentSettings
from modelcache.controller.config import ControllerSettings
from webhook.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize("settings", [Settings, ControllerSettings, AgentSettings])
def test_every_setting_is_in_the_configuration_reference(settings: type) -> None:
    missing = [f.name for f in fields(settings) if f"MODELCACHE_{f.name.upper()}" not in CONFIGURATION]
    assert missing == []


def leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("resources",):
            found += leaves(value, path + ".")
        else:
            found.append(path)
    return found


def test_every_chart_value_is_in_the_configuration_reference() -> None:
    values = yaml.safe_load((ROOT / "manifests" / "chart" / "values.yaml").read_text())
    documented = CONFIGURATION.split("## Helm values", 1)[1]
    missing = []
    for path in leaves(values):
        parent, _, name = path.rpartition(".")  # `image.webhook.repository`, `.tag` documents both
        named = (f"`{path}`", f"`{parent}.{name}", f".{name}`", f"`{name}`")
        if not any(form in documented for form in named):
            missing.append(path)
    assert missing == []


def test_the_fetchers_documented_exit_codes_are_exactly_those_it_can_end_with() -> None:
    import ast
    import re

    from modelcache.contract.errors import FetchError

    table = (ROOT / "docs" / "fetcher.md").read_text().split("## Exit codes and messages", 1)[1]
    documented = {int(code): reason for code, reason in re.findall(r"^\|\s*(\d+)\s*\|\s*`?(\w*)`?\s*\|", table, re.M)}
    kinds, pending = {}, list(FetchError.__subclasses__())
    while pending:
        cls = pending.pop()
        kinds[cls.exit_code] = cls
        pending += cls.__subclasses__()
    made = set()  # the error classes the code constructs somewhere (raised, or returned to be raised)
    for path in [*ROOT.glob("fetcher/**/*.py"), *ROOT.glob("modelcache/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                made.add(node.func.id)
    assert {code: cls.reason for code, cls in kinds.items()} | {0: "", 1: "Failed"} == documented
    assert [cls.__name__ for cls in kinds.values() if cls.__name__ not in made] == []
