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
