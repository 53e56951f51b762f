"""Deadline headers: grpc-timeout and x-hyphal-deadline round trips, next-hop timeouts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyphal.proxy.resilience.deadline import (
    Deadline,
    deadline_millis,
    effective_timeout,
    format_deadline_header,
    format_grpc_timeout,
    parse_deadline_header,
    parse_grpc_timeout,
    remaining_from_headers,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("100m", 0.1), ("2S", 2.0), ("5M", 300.0), ("1H", 3600.0), ("250u", 0.00025),
    ("7n", 7e-9), ("99999999S", 99999999.0),
])
def test_parse_grpc_timeout(text: str, seconds: float) -> None:
    assert parse_grpc_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [None, "", "m", "100", "100x", "-1S", "1.5S", "123456789S",
                                 " S", "１S"])
def test_malformed_grpc_timeouts_are_absent(bad: str | None) -> None:
    assert parse_grpc_timeout(bad) is None


def test_format_grpc_timeout_picks_the_finest_unit_that_fits() -> None:
    assert format_grpc_timeout(0.1) == "100000u"
    assert format_grpc_timeout(0.05) == "50000000n"
    assert format_grpc_timeout(300.0) == "300000m"
    assert format_grpc_timeout(0.0) == "1n"


@settings(deadline=None)  # wall-clock limits flake on a loaded CI box
@given(st.floats(min_value=1e-9, max_value=1e8, allow_nan=False))
def test_grpc_timeout_round_trip_never_shortens(seconds: float) -> None:
    text = format_grpc_timeout(seconds)
    assert len(text) <= 9
    back = parse_grpc_timeout(text)
    assert back is not None
    assert back >= seconds * (1 - 1e-9)
    # Rounded up by less than one unit of the finest unit that fits in 8 digits, which is
    # always below 1e-5 of the value (a coarser unit is chosen only past 10**8 finer ones).
    assert back <= seconds * (1 + 1e-5) + 1e-9


@settings(deadline=None)  # wall-clock limits flake on a loaded CI box
@given(st.integers(min_value=0, max_value=10**9))
def test_deadline_header_round_trip(ms: int) -> None:
    assert format_deadline_header(ms / 1000) == str(ms)
    assert parse_deadline_header(str(ms)) == ms / 1000


@settings(deadline=None)
@given(st.one_of(st.floats(min_value=-1.0, max_value=1e12, allow_nan=False),
                 st.integers(min_value=0, max_value=10**12).map(lambda ms: (ms + 0.9999995) / 1000),
                 st.integers(min_value=0, max_value=10**12).map(lambda ms: (ms - 1e-7) / 1000)))
def test_deadline_millis_skips_rounding_only_where_it_cannot_matter(seconds: float) -> None:
    # The floor is taken without round(ms, 6) unless the fraction is within 1e-6 of the next
    # integer: the answer must be the rounding one's, boundaries included.
    expected = 0 if seconds <= 0 else int(round(seconds * 1000.0, 6))
    assert deadline_millis(seconds) == expected
    assert format_deadline_header(seconds) == str(expected)


def test_deadline_header_floors_and_rejects_garbage() -> None:
    assert format_deadline_header(33554.429) == "33554429"  # float noise is not floored away
    assert format_deadline_header(0.0019) == "1"
    assert format_deadline_header(-3.0) == "0"
    for bad in (None, "", "-5", "1.5", "abc", "9" * 20):
        assert parse_deadline_header(bad) is None


def test_remaining_takes_the_smaller_of_both_headers() -> None:
    assert remaining_from_headers({}) is None
    assert remaining_from_headers({"x-hyphal-deadline": "800"}) == 0.8
    assert remaining_from_headers({"grpc-timeout": "2S"}) == 2.0
    assert remaining_from_headers({"x-hyphal-deadline": "800", "grpc-timeout": "300m"}) == 0.3


def test_effective_timeout_is_the_minimum_and_zero_means_no_limit() -> None:
    assert effective_timeout(15.0, 0.4) == 0.4
    assert effective_timeout(1.0, 5.0) == 1.0
    assert effective_timeout(0.0, None) is None
    assert effective_timeout(None, 2.0, per_try_timeout_s=0.5) == 0.5
    assert effective_timeout(0, 3.0, 0) == 3.0


def test_deadline_propagates_the_remaining_budget_hop_by_hop() -> None:
    # Hop 1: the app asked for 2 s (gRPC), the route allows 15 s.
    first = Deadline.start(100.0, 15.0, {"grpc-timeout": "2S"})
    assert first.remaining(100.5) == pytest.approx(1.5)
    headers = dict(first.outgoing_headers(100.5, grpc=True))
    assert headers == {"x-hyphal-deadline": "1500", "grpc-timeout": "1500000u"}
    # Hop 2 (another host, another clock): a tighter route timeout wins, then expiry.
    second = Deadline.start(7.0, 1.0, headers)
    assert second.remaining(7.0) == pytest.approx(1.0)
    assert second.try_timeout(7.2, 0.25) == pytest.approx(0.25)
    assert second.try_timeout(7.9, 0.25) == pytest.approx(0.1)
    assert not second.expired(7.99) and second.expired(8.0)
    assert dict(second.outgoing_headers(8.5, grpc=False)) == {"x-hyphal-deadline": "0"}


def test_no_deadline_means_no_headers() -> None:
    none = Deadline.start(0.0, None)
    assert none.remaining(5.0) is None and not none.expired(1e9)
    assert none.outgoing_headers(1.0, grpc=True) == ()
