"""One way to read settings from the environment, with one grammar for every kind of value.

Every program of ours (webhook, fetcher, controller, cache agent) reads ``MODELCACHE_*`` variables once
at start through :class:`EnvReader`, which collects every problem before it reports any, so one start
names them all. Values have one grammar everywhere:

- booleans: ``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off`` (any case);
- durations: ``30s``, ``5m``, ``1h``, ``1d``, ``1w``, ``1h30m`` (a bare number only where the name says
  the unit, ``..._SECONDS``);
- sizes: Kubernetes quantities (``100Gi``, ``50G``, ``1e9``);
- names: the Kubernetes rules of the kind of object they name.

Kubernetes puts service-link variables into every pod (a Service named ``modelcache-webhook`` gives
``MODELCACHE_WEBHOOK_SERVICE_HOST``, ``MODELCACHE_WEBHOOK_PORT_443_TCP`` ...); they are never settings and
are ignored. Any other unknown ``MODELCACHE_*`` name is a typo and a problem.

Standard library only: the fetcher's cache-hit path imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from datetime import timedelta
from typing import Any, TypeVar

from modelcache.contract.quantities import duration_seconds, quantity, size_bytes

ENV_PREFIX = "MODELCACHE_"
T = TypeVar("T")
Reader = Callable[[str], Any]
_SERVICE_LINK = re.compile(
    r"MODELCACHE_[A-Z0-9_]*_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)"
)
_UNSET: Any = object()
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")
DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(?:/[!-~]*)?")


class SettingsError(Exception):
    """One or more settings are invalid; the message lists every problem."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid {what} settings ({len(problems)} problem(s)):\n{lines}")


def is_service_link(name: str) -> bool:
    """A variable Kubernetes sets for a Service whose name starts with modelcache-."""
    return _SERVICE_LINK.fullmatch(name) is not None


class EnvReader:
    """Reads variables with readers and collects every problem (a reader raises ValueError to refuse)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        self.asked: set[str] = set()

    def get(self, name: str, reader: Callable[[str], T], default: T) -> T:
        """The variable read by `reader`, or `default` when it is unset (or refused: a problem)."""
        self.asked.add(name)
        raw = self.environ.get(name)
        if raw is None:
            return default
        try:
            return reader(raw)
        except ValueError as err:
            self.problems.append(f"{name}={raw!r}: {err}")
            return default

    def required(self, name: str, reader: Callable[[str], T]) -> T | None:
        """The variable read by `reader`; a problem when it is unset or empty."""
        self.asked.add(name)
        raw = self.environ.get(name, "")
        if not raw:
            self.problems.append(f"{name} is not set")
            return None
        return self.get(name, reader, None)

    def unknown(self, *, extra_known: Iterable[str] = ()) -> list[str]:
        """MODELCACHE_* names set but never asked for (typos), service links aside."""
        known = self.asked | set(extra_known)
        return sorted(
            name
            for name in self.environ
            if name.startswith(ENV_PREFIX) and name not in known and not is_service_link(name)
        )

    def refuse_unknown(self, what: str) -> None:
        """Count every unknown MODELCACHE_* name as a problem."""
        names = self.unknown()
        if names:
            known = ", ".join(sorted(self.asked))
            self.problems += [f"{name} is not a {what} setting (known: {known})" for name in names]


def load_settings(cls: type[T], readers: Mapping[str, Reader], environ: Mapping[str, str], *, what: str) -> T:
    """A frozen settings dataclass whose field `f` is the variable MODELCACHE_<F>, read by readers[f].

    Unknown MODELCACHE_* names are problems; so is anything the instance's `problems()` (cross-field
    checks) returns. One SettingsError names every problem.
    """
    reader = EnvReader(environ)
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]  # cls is a dataclass
        value = reader.get(ENV_PREFIX + f.name.upper(), readers[f.name], _UNSET)
        if value is not _UNSET:  # unset: the field's default
            values[f.name] = value
    reader.refuse_unknown(what)
    settings = cls(**values)  # what was refused keeps its default, so the cross-field checks still run
    problems = reader.problems + list(getattr(settings, "problems", list)())
    if problems:
        raise SettingsError(what, problems)
    return settings


# --- readers ------------------------------------------------------------------------------------------
def read_boolean(value: str) -> bool:
    """true/false, 1/0, yes/no, on/off, in any case."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected true or false")


def read_choice(*choices: str) -> Callable[[str], str]:
    """A reader that accepts exactly `choices`."""

    def read(value: str) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return read


def read_seconds(
    *, minimum: float = 0.0, maximum: float | None = None, bare_unit: str | None = None
) -> Callable[[str], float]:
    """A duration (``30s``, ``5m``, ``1d``) as seconds, within bounds (`bare_unit`: see duration_seconds)."""

    def read(value: str) -> float:
        seconds = duration_seconds(value, bare_unit=bare_unit)
        if seconds < minimum or (maximum is not None and seconds > maximum):
            bound = (
                f"from {_seconds_text(minimum)} to {_seconds_text(maximum)}"
                if maximum is not None
                else (f"of at least {_seconds_text(minimum)}")
            )
            raise ValueError(f"expected a duration {bound}")
        return seconds

    return read


def read_duration(*, minimum: float = 0.001, maximum: float | None = None) -> Callable[[str], timedelta]:
    """A duration (``30s``, ``5m``, ``1d``, ``1w``) as a timedelta; positive by default."""
    seconds = read_seconds(minimum=minimum, maximum=maximum)
    return lambda value: timedelta(seconds=seconds(value))


def read_size(value: str) -> int:
    """A size in bytes, as a Kubernetes quantity (``50Gi``, ``200G``)."""
    size = size_bytes(value)
    if size <= 0:
        raise ValueError("expected a size greater than zero")
    return size


def read_quantity(value: str) -> str:
    """A positive Kubernetes quantity, kept as written (it goes into an object spec)."""
    if quantity(value) <= 0:
        raise ValueError("expected a quantity greater than zero")
    return value


def read_integer(*, minimum: int, maximum: int) -> Callable[[str], int]:
    def read(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {minimum} to {maximum}") from None
        if not minimum <= number <= maximum:
            raise ValueError(f"expected a whole number from {minimum} to {maximum}")
        return number

    return read


def read_port(value: str) -> int:
    return read_integer(minimum=1, maximum=65535)(value)


def read_url(value: str) -> str:
    """An http(s) URL, or empty."""
    if value and not _URL.fullmatch(value):
        raise ValueError("expected an http(s) URL such as https://hub-mirror.example.com")
    return value.rstrip("/")


def read_name(pattern: re.Pattern[str], what: str, *, limit: int, empty: bool = False) -> Callable[[str], str]:
    """A Kubernetes name of the given pattern (empty allowed when `empty`)."""

    def read(value: str) -> str:
        if (value or not empty) and (len(value) > limit or not pattern.fullmatch(value)):
            raise ValueError(f"expected {what} (lowercase letters, digits and '-', at most {limit} characters)")
        return value

    return read


def read_text(value: str) -> str:
    return value


def _seconds_text(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:g} s"
