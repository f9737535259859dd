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
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar

from modelcache.contract.quantities import duration_seconds, size_bytes
from modelcache.contract.wire import TRUE_WORDS

ENV_PREFIX = "MODELCACHE_"
T = TypeVar("T")
# Patterns as strings: re compiles each on first use (and caches it), so importing this module costs little
# on the fetcher's cache-hit path.
_SERVICE_LINK = (
    r"MODELCACHE_[A-Z0-9_]*_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)"
)
_UNSET: Any = object()
_TRUE = TRUE_WORDS  # the words the opt-out reads as true, so that one variable reads one way everywhere
_FALSE = frozenset({"false", "0", "no", "off", ""})
_URL = r"https?://[A-Za-z0-9.\-\[\]:]+(?:/[!-~]*)?"


class SettingsError(Exception):
    """One or more settings are invalid; the message lists every problem."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid {what} settings ({len(problems)} problem(s)):\n{lines}")


def is_service_link(name: str) -> bool:
    """A variable Kubernetes sets for a Service whose name starts with modelcache-."""
    return re.fullmatch(_SERVICE_LINK, name) is not None


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


def load_settings(cls: type[T], readers: Mapping[str, Reader[Any]], environ: Mapping[str, str], *, what: str) -> T:
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


# --- help ---------------------------------------------------------------------------------------------
def help_text(cls: type, readers: Mapping[str, Reader[Any]], meanings: Mapping[str, str], *, intro: str) -> str:
    """`--help` for a program configured by MODELCACHE_* variables: each with its default and meaning."""
    import textwrap  # only for --help

    paragraphs = [textwrap.fill(paragraph, 110) for paragraph in intro.strip().split("\n\n")]
    lines = [
        "\n\n".join(paragraphs),
        "",
        "Settings (environment variables, read once at start; every problem is reported at once):",
    ]
    for f in fields(cls):
        default = shown_default(f.default, readers[f.name].kind)
        lines.append(f"  {ENV_PREFIX}{f.name.upper()}  (default: {default})")
        lines += textwrap.wrap(meanings[f.name], 100, initial_indent="      ", subsequent_indent="      ")
    lines += ["", GRAMMAR]
    return "\n".join(lines) + "\n"


GRAMMAR = (
    "Durations: a number and ms, s, m, h, d or w (90s, 1h30m, 1w). Sizes: Kubernetes quantities (100Gi, 50G). "
    "Booleans: true/false, 1/0, yes/no, on/off. Unknown MODELCACHE_* names are refused; Kubernetes service "
    "links (MODELCACHE_*_SERVICE_HOST, ...) are ignored."
)


def shown_default(value: object, kind: str) -> str:
    """A default as a person would write it: 1h, 30s, true, (none)."""
    if isinstance(value, timedelta):
        return duration_text(value.total_seconds())
    if kind == "duration" and isinstance(value, int | float):
        return duration_text(float(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if value != "" else "(none)"


def duration_text(seconds: float) -> str:
    """The shortest exact form in our grammar: 1w, 3m, 1500ms, 0."""
    if seconds == 0:
        return "0"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def answer_help(argv: list[str], text: Callable[[], str], *, program: str) -> int | None:
    """For programs that take no arguments: 0 after printing `--help`, 2 for anything else, None to run."""
    if not argv:
        return None
    if argv in (["--help"], ["-h"]):
        sys.stdout.write(text())
        return 0
    sys.stderr.write(
        f"{program} takes no arguments ({' '.join(argv)!r}); its settings come from MODELCACHE_* "
        f"variables: {program} --help lists them\n"
    )
    return 2


# --- readers ------------------------------------------------------------------------------------------
ReaderKind = Literal["boolean", "choice", "duration", "size", "integer", "url", "name", "text"]


class Reader(Generic[T]):
    """Reads one kind of value; raises ValueError (naming what was expected) to refuse it.

    A plain class, not a dataclass: dozens are made at import, on the fetcher's cache-hit path.
    """

    __slots__ = ("kind", "parse")

    def __init__(self, kind: ReaderKind, parse: Callable[[str], T]) -> None:
        self.kind = kind
        self.parse = parse

    def __call__(self, value: str) -> T:
        return self.parse(value)


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected true or false")


read_boolean = Reader("boolean", _boolean)  # true/false, 1/0, yes/no, on/off, in any case


def read_choice(*choices: str) -> Reader[str]:
    """Exactly one of `choices`."""

    def read(value: str) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return Reader("choice", read)


def read_seconds(*, minimum: float = 0.0, maximum: float | None = None, bare_unit: str | None = None) -> Reader[float]:
    """A duration (``30s``, ``5m``, ``1d``) as seconds, within bounds (`bare_unit`: see duration_seconds)."""

    def read(value: str) -> float:
        seconds = duration_seconds(value, bare_unit=bare_unit)
        if seconds < minimum or (maximum is not None and seconds > maximum):
            bound = f"of at least {_seconds_text(minimum)}"
            if maximum is not None:
                bound = f"from {_seconds_text(minimum)} to {_seconds_text(maximum)}"
            raise ValueError(f"expected a duration {bound}")
        return seconds

    return Reader("duration", read)


def read_duration(*, minimum: float = 0.001, maximum: float | None = None) -> Reader[timedelta]:
    """A duration (``30s``, ``5m``, ``1d``, ``1w``) as a timedelta; positive by default."""
    seconds = read_seconds(minimum=minimum, maximum=maximum)
    return Reader("duration", lambda value: timedelta(seconds=seconds(value)))


def _size(value: str) -> int:
    size = size_bytes(value)
    if size <= 0:
        raise ValueError("expected a size greater than zero")
    return size


def _storage(value: str) -> str:
    _size(value)
    return value


read_size = Reader("size", _size)  # bytes, from a Kubernetes quantity (50Gi, 200G)
read_storage = Reader("size", _storage)  # a positive whole-byte quantity, kept as written (it goes into a spec)


def read_integer(*, minimum: int, maximum: int) -> Reader[int]:
    def read(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {minimum} to {maximum}") from None
        if not minimum <= number <= maximum:
            raise ValueError(f"expected a whole number from {minimum} to {maximum}")
        return number

    return Reader("integer", read)


read_port = read_integer(minimum=1, maximum=65535)


def _url(value: str) -> str:
    if value and not re.fullmatch(_URL, value):
        raise ValueError("expected an http(s) URL such as https://hub-mirror.example.com")
    return value.rstrip("/")


read_url = Reader("url", _url)  # an http(s) URL, or empty


def read_name(pattern: str, what: str, *, limit: int, empty: bool = False) -> Reader[str]:
    """A Kubernetes name of the given pattern (modelcache.contract.annotation.DNS_*; empty allowed when `empty`)."""

    def read(value: str) -> str:
        if (value or not empty) and (len(value) > limit or not re.fullmatch(pattern, value)):
            raise ValueError(f"expected {what} (lowercase letters, digits and '-', at most {limit} characters)")
        return value

    return Reader("name", read)


read_text = Reader("text", str)


def _seconds_text(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:g} s"
