"""Sizes and ages as people write them: ``10GiB``, ``500MB``, ``24h``, ``7d``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from .errors import ConfigError, UsageError
from .names import shown

#: The most an extracted archive may expand to, unless the config says otherwise (a bomb stops here).
DEFAULT_EXTRACT_LIMIT = 4 * 1024**3

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?b|b)?\Z", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)\Z")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 3600}


def parse_size(value: Any, where: str) -> int:
    """``"10GiB"``, ``"512MB"``, ``"1048576"`` or a number of bytes; ``where`` names the setting."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f'{where} must be a size such as "10GiB", "500MB" or a number of bytes, not {shown(value)}')
    number, unit = float(match.group(1)), (match.group(2) or "B").lower()
    try:
        return int(number * _SIZE_UNITS[unit])
    except OverflowError:  # digits enough to make the float infinite
        raise ConfigError(f"{where} is too large: {shown(value)}") from None


def parse_age(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``90s`` (a bare number is hours)."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise UsageError(f"invalid age {shown(text)}", "use a number with s, m, h or d, e.g. 24h or 7d")
    try:
        return timedelta(seconds=float(match.group(1)) * _AGE_UNITS[match.group(2)])
    except OverflowError:  # more days than a date can hold
        raise UsageError(f"age {shown(text)} is too large", "use at most 999999999 days, e.g. 3650d") from None


def age_text(age: timedelta) -> str:
    """An age as :func:`parse_age` reads it, in the largest unit that divides it (``180d``)."""
    seconds = age.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
