"""One grammar for sizes and durations, everywhere a person writes one, and their human forms.

- Sizes are Kubernetes quantities: ``500m``, ``2``, ``1.5Gi``, ``100G``, ``1e9``. Binary suffixes
  (``Ki`` ... ``Ei``) are powers of 1024, decimal ones (``k``, ``M``, ``G`` ...) powers of 1000, and ``m``
  is milli, as in Kubernetes (so ``100m`` bytes is a tenth of a byte, and refused as a size).
- Durations are a number and a unit, ``ms``, ``s``, ``m``, ``h``, ``d`` or ``w`` (``90s``, ``15m``, ``1d``), or
  several in a row (``1h30m``). A bare number is refused (is ``7`` seven seconds or seven days?), except
  ``0`` and where the setting's own name gives the unit (``MODELCACHE_TLS_RELOAD_SECONDS=10``).

Annotations, settings and command-line options all read them through this module.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE]\d+)?")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
QUANTITY_EXPECTED = "a Kubernetes quantity such as 500m, 2, 8Gi or 100G"
_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)"  # patterns: re compiles them on first use
_DURATION = r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
DURATION_EXPECTED = "a duration: a number and ms, s, m, h, d or w (90s, 15m, 1h30m, 1d, 1w)"


def quantity(value: str) -> Decimal:
    """The value of a Kubernetes quantity; ValueError when it is not one."""
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"expected {QUANTITY_EXPECTED}")
    suffix = match["suffix"] or ""
    try:
        scale = Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _SUFFIXES[suffix]
        return Decimal(match["number"]) * scale
    except (InvalidOperation, ValueError, OverflowError) as err:  # pragma: no cover - the regex bounds it
        raise ValueError(f"expected {QUANTITY_EXPECTED}") from err


def size_bytes(value: str) -> int:
    """A size in bytes, as a Kubernetes quantity (``50Gi``, ``200G``); ValueError otherwise."""
    amount = quantity(value)
    if amount != amount.to_integral_value():
        raise ValueError(f"a size is a whole number of bytes ({value!r} is not); expected {QUANTITY_EXPECTED}")
    return int(amount)


def duration_seconds(value: str, *, bare_unit: str | None = None) -> float:
    """Seconds of a duration (``90s``, ``1h30m``, ``1d``); ValueError otherwise.

    `bare_unit`: the unit of a bare number (``"s"`` for a setting named ``..._SECONDS``); None refuses one.
    """
    text = value.strip()
    if re.fullmatch(_DURATION, text):
        return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in re.findall(_DURATION_PART, text))
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        if float(text) == 0:
            return 0.0
        if bare_unit is not None:
            return float(text) * _UNIT_SECONDS[bare_unit]
        raise ValueError(f"{text!r} has no unit: write {text}s, {text}m, {text}h, {text}d or {text}w")
    raise ValueError(f"expected {DURATION_EXPECTED}")


def format_bytes(count: float) -> str:
    """'512 B', '1.5 KiB', '3.2 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """'3d 4h', '12m', '40s': the two largest units."""
    whole = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size or (unit == "s" and not parts):
            parts.append(f"{whole // size}{unit}")
            whole %= size
        if len(parts) == 2:
            break
    return " ".join(parts)
