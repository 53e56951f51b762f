"""Duration strings: parsing, formatting, errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hyphal.config import DurationError, format_duration, parse_duration, to_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("0.5s", 0.5),
        ("100ms", 0.1),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        ("0s", 0.0),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert to_seconds(text) == pytest.approx(seconds)
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["1.5s", "100ms", "2m", "1h", "10s", "250us"])
def test_format_round_trips_what_users_write(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize("bad", ["5", "1x", "", "-1s", "1 s", "s"])
def test_bad_strings(bad: str) -> None:
    with pytest.raises(DurationError, match="is not a duration"):
        parse_duration(bad)


def test_bare_number_needs_a_unit() -> None:
    with pytest.raises(DurationError, match="with a unit"):
        parse_duration(5)
