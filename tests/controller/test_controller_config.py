"""Controller settings: every problem at once, each naming the variable, the value and what is expected."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelcache.controller.config import ControllerSettings
from modelcache.runtime.settings import SettingsError, read_duration


def test_all_problems_are_reported_together_with_what_to_do() -> None:
    environ = {
        "MODELCACHE_VOLUME_MODE": "share",
        "MODELCACHE_RESYNC_EVERY": "30 seconds",
        "MODELCACHE_CLAIM_NAME": "Model_Cache",
        "MODELCACHE_STORAGE_SIZ": "1Ti",
    }
    with pytest.raises(SettingsError) as caught:
        ControllerSettings.from_env(environ)
    message = str(caught.value)
    assert "MODELCACHE_VOLUME_MODE='share': expected one of existing, provision, clone" in message
    assert "MODELCACHE_RESYNC_EVERY='30 seconds': expected a duration" in message
    assert "MODELCACHE_CLAIM_NAME='Model_Cache'" in message
    assert "MODELCACHE_STORAGE_SIZ is not a controller setting" in message
    assert len(caught.value.problems) == 4


@pytest.mark.parametrize("mode", ["provision", "clone"])
def test_managed_volumes_need_a_storage_class(mode: str) -> None:
    with pytest.raises(SettingsError, match="needs MODELCACHE_STORAGE_CLASS"):
        ControllerSettings.from_env({"MODELCACHE_VOLUME_MODE": mode})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_durations_use_mlis_units(text: str, expected: timedelta) -> None:
    assert read_duration()(text) == expected


def test_the_identity_defaults_to_the_host_name() -> None:
    settings = ControllerSettings.from_env(
        {"MODELCACHE_VOLUME_MODE": "clone", "MODELCACHE_STORAGE_CLASS": "nfs-client"}
    )
    assert settings.identity
    assert settings.volume_mode == "clone"
