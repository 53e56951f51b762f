"""Duration strings as Istio users write them ("1.5s", "100ms", "2m", "1h30m") <-> timedelta."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["DurationError", "format_duration", "parse_duration", "to_seconds"]

_UNITS_US: dict[str, int] = {
    "ns": 0,  # handled separately: sub-microsecond
    "us": 1,
    "µs": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+")


class DurationError(ValueError):
    """A duration string that hyphal cannot read."""


def parse_duration(value: object) -> timedelta:
    """Parse a duration: a string like "1s", "0.5s", "100ms", "1m", "1h", "1m30s", or a timedelta.

    Bare numbers are refused on purpose: Istio requires a unit, and "5" is ambiguous.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise DurationError("must not be negative")
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise DurationError(
            f'must be a duration string with a unit, like "1.5s", "100ms" or "2m" (got {value!r})'
        )
    text = value.strip()
    if not _WHOLE.fullmatch(text):
        raise DurationError(
            f"{value!r} is not a duration; write a number with a unit (h, m, s, ms, us, ns), "
            'like "1.5s", "100ms" or "2m"'
        )
    total_ns = 0
    for number, unit in _PART.findall(text):
        if unit == "ns":
            total_ns += round(float(number))
        else:
            total_ns += round(float(number) * _UNITS_US[unit] * 1000)
    return timedelta(microseconds=total_ns / 1000)


def to_seconds(value: object) -> float:
    """Parse a duration (see `parse_duration`) and return float seconds."""
    return parse_duration(value).total_seconds()


def format_duration(value: timedelta) -> str:
    """Write a timedelta the way a user would: "2h", "5m", "10s", "1.5s", "100ms", "250us"."""
    us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if us == 0:
        return "0s"
    if us % 3_600_000_000 == 0:
        return f"{us // 3_600_000_000}h"
    if us % 60_000_000 == 0:
        return f"{us // 60_000_000}m"
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000}s"
    if us < 1_000_000:
        if us % 1000 == 0:
            return f"{us // 1000}ms"
        return f"{us}us"
    return f"{us / 1_000_000:.6f}".rstrip("0") + "s"
