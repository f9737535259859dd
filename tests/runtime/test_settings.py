"""One grammar for every setting of every program: durations with units, sizes as Kubernetes quantities,
every problem reported at once, and Kubernetes' service-link variables ignored by every loader."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

import fetcher.config
import modelcache.agent.config
import modelcache.controller.config
import webhook.config
from fetcher.config import FetchSettings
from modelcache.agent.config import AgentSettings
from modelcache.contract.errors import ConfigError
from modelcache.contract.quantities import duration_seconds, size_bytes
from modelcache.controller.config import ControllerSettings
from modelcache.runtime.settings import Reader, SettingsError
from webhook.config import Settings

SERVICE_LINKS = {  # what a Service named modelcache-webhook puts into every pod of its namespace
    "MODELCACHE_WEBHOOK_SERVICE_HOST": "10.96.0.12",
    "MODELCACHE_WEBHOOK_SERVICE_PORT": "443",
    "MODELCACHE_WEBHOOK_SERVICE_PORT_HTTPS": "443",
    "MODELCACHE_WEBHOOK_PORT": "tcp://10.96.0.12:443",
    "MODELCACHE_WEBHOOK_PORT_443_TCP": "tcp://10.96.0.12:443",
    "MODELCACHE_WEBHOOK_PORT_443_TCP_PROTO": "tcp",
    "MODELCACHE_WEBHOOK_PORT_443_TCP_PORT": "443",
    "MODELCACHE_WEBHOOK_PORT_443_TCP_ADDR": "10.96.0.12",
}


def fetcher_env(cache: Path) -> dict[str, str]:
    from devtools.fetcher_env import fetcher_environment

    return fetcher_environment("hf://org/model", cache)


def loaders(cache: Path) -> dict[str, tuple[Callable[[Mapping[str, str]], object], dict[str, str]]]:
    """Each program's loader, and the least environment it accepts."""
    return {
        "webhook": (Settings.from_env, {}),
        "controller": (ControllerSettings.from_env, {}),
        "agent": (AgentSettings.from_env, {"MODELCACHE_CACHE_ROOT": str(cache)}),
        "fetcher": (FetchSettings.from_env, fetcher_env(cache)),
    }


def readers(kind: str) -> list[tuple[str, str, Reader[Any]]]:
    """(program, variable, reader) of every setting of `kind`, in every program."""
    found = []
    for program, module, cls in (
        ("webhook", webhook.config, Settings),
        ("controller", modelcache.controller.config, ControllerSettings),
        ("agent", modelcache.agent.config, AgentSettings),
    ):
        table: dict[str, Reader[Any]] = module._READERS
        for f in fields(cls):
            if table[f.name].kind == kind:
                found.append((program, f"MODELCACHE_{f.name.upper()}", table[f.name]))
    found += [("fetcher", name, reader) for name, (reader, _) in fetcher.config.TUNABLES.items() if reader.kind == kind]
    return found


DURATIONS = readers("duration")
SIZES = readers("size")


def test_every_program_has_durations_and_sizes_to_check() -> None:
    assert {program for program, _, _ in DURATIONS} == {"webhook", "controller", "agent", "fetcher"}
    assert {program for program, _, _ in SIZES} >= {"webhook", "controller", "agent"}


@pytest.mark.parametrize(("program", "name", "reader"), DURATIONS, ids=[f"{p}:{n}" for p, n, _ in DURATIONS])
@pytest.mark.parametrize("text", ["30s", "5m", "1h", "1d", "1w", "1h30m", "1500ms"])
def test_every_duration_setting_reads_every_unit(program: str, name: str, reader: Reader[Any], text: str) -> None:
    problem = ""
    try:
        value = reader(text)
    except ValueError as err:
        problem = str(err)
    if problem:  # only a setting's own bound may refuse a well-formed duration, never the grammar
        assert "expected a duration from" in problem or "of at least" in problem, problem
        return
    seconds = value.total_seconds() if hasattr(value, "total_seconds") else float(value)
    assert seconds == pytest.approx(duration_seconds(text))


@pytest.mark.parametrize(("program", "name", "reader"), DURATIONS, ids=[f"{p}:{n}" for p, n, _ in DURATIONS])
def test_a_bare_number_is_not_a_duration_where_the_name_does_not_say_the_unit(
    program: str, name: str, reader: Reader[Any]
) -> None:
    if name.endswith("_SECONDS"):
        assert reader("10") is not None
        return
    with pytest.raises(ValueError, match="has no unit: write 7s, 7m, 7h, 7d or 7w"):
        reader("7")


@pytest.mark.parametrize(("program", "name", "reader"), SIZES, ids=[f"{p}:{n}" for p, n, _ in SIZES])
@pytest.mark.parametrize("text", ["100Gi", "50G", "1.5Ti", "1e9", "2048Mi"])
def test_every_size_setting_reads_kubernetes_quantities(
    program: str, name: str, reader: Reader[Any], text: str
) -> None:
    value = reader(text)
    assert size_bytes(str(value)) == size_bytes(text) if isinstance(value, str) else value == size_bytes(text)


@pytest.mark.parametrize(("program", "name", "reader"), SIZES, ids=[f"{p}:{n}" for p, n, _ in SIZES])
def test_a_milli_byte_is_not_a_size(program: str, name: str, reader: Reader[Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message depends on the setting's own rules)
        reader("500m")  # Kubernetes' m is milli: half a byte


@pytest.mark.parametrize("program", ["webhook", "controller", "agent", "fetcher"])
def test_service_links_are_ignored_by_every_loader(program: str, tmp_path: Path) -> None:
    load, least = loaders(tmp_path)[program]
    settings = load({**least, **SERVICE_LINKS})
    assert getattr(settings, "ignored", ()) == ()  # not even a warning for the fetcher


@pytest.mark.parametrize("program", ["webhook", "controller", "agent", "fetcher"])
def test_every_problem_is_reported_at_once(program: str, tmp_path: Path) -> None:
    load, least = loaders(tmp_path)[program]
    bad = {
        "webhook": {"MODELCACHE_PORT": "http", "MODELCACHE_FETCHER_LOCK_TIMEOUT": "forever"},
        "controller": {"MODELCACHE_RESYNC_EVERY": "often", "MODELCACHE_STORAGE_SIZE": "big"},
        "agent": {"MODELCACHE_SCAN_EVERY": "60", "MODELCACHE_PURGE_MIN_FREE": "lots"},
        "fetcher": {"MODELCACHE_LOCK_POLL": "fast", "MODELCACHE_READ_TIMEOUT": "60"},
    }[program]
    with pytest.raises((SettingsError, ConfigError)) as caught:
        load({**least, **bad, **({"MODELCACHE_TYPO": "1"} if program != "fetcher" else {})})
    message = str(caught.value)
    for name in bad:
        assert name in message, message
    if program != "fetcher":  # a typo stops a server; the fetcher only logs it (its env comes from the webhook)
        assert "MODELCACHE_TYPO is not a" in message
