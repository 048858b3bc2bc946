"""Typed values written as text in routes.yaml: durations, sizes, rates and percentages.

Each parser takes the text an operator wrote and returns plain numbers in one unit
(seconds, bytes, tokens per second, a fraction), or raises ValueError with a message
that shows the accepted form and the value it got.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_BYTES = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(ms|s|sec|m|min|h|hour)\s*$")
_RATE_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_duration(value: object) -> float:
    """Return seconds for '250ms', '2s', '5m', '1h' (a bare number is seconds)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 250ms or 2s, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a duration of zero or more, got {value!r}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration such as 250ms or 2s, got {str(value)!r}")
    return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def parse_size(value: object) -> int:
    """Return bytes for '512KiB', '1MiB', '10MB' (a bare number is bytes)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 512KiB or 1MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a size of zero or more, got {value!r}")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"expected a size such as 512KiB or 1MiB, got {str(value)!r}")
    return int(float(match.group(1)) * _SIZE_BYTES[match.group(2)])


@dataclass(frozen=True)
class Rate:
    """A number of events per period, kept as written so it can be shown back."""

    count: float
    period_seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.period_seconds

    def __str__(self) -> str:
        names = {0.001: "ms", 1: "s", 60: "min", 3600: "h"}
        count = int(self.count) if self.count.is_integer() else self.count
        return f"{count}/{names.get(self.period_seconds, f'{self.period_seconds}s')}"


def parse_rate(value: object) -> Rate:
    """Return a Rate for '20/s', '100/min', '5000/h'."""
    match = _RATE.match(str(value)) if not isinstance(value, bool) else None
    if not match:
        raise ValueError(f"expected a rate such as 20/s or 100/min, got {str(value)!r}")
    count = float(match.group(1))
    if count <= 0:
        raise ValueError(f"expected a rate above zero, got {str(value)!r}")
    return Rate(count=count, period_seconds=float(_RATE_SECONDS[match.group(2)]))


def parse_percentage(value: object) -> float:
    """Return a fraction for '20%' (0.2); a bare number from 0 to 1 is taken as a fraction."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    match = _PERCENT.match(str(value)) if not isinstance(value, bool) else None
    if not match or float(match.group(1)) > 100:
        raise ValueError(f"expected a percentage from 0% to 100% such as 20%, got {value!r}")
    return float(match.group(1)) / 100


def format_duration(seconds: float) -> str:
    """Show seconds the way an operator writes them: 250ms, 2s, 1.5s, 5m."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


# The accepted text forms, for JSON Schema (the regex syntax is shared with ECMA-262).
DURATION_PATTERN = _DURATION.pattern
SIZE_PATTERN = _SIZE.pattern
RATE_PATTERN = _RATE.pattern
PERCENT_PATTERN = _PERCENT.pattern


def plural(count: int, noun: str) -> str:
    """'1 route', '3 routes'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
