"""Backoff delays (bounds, full jitter, cap), Retry-After, and Envoy retry_on decisions."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyphal.proxy.resilience.backoff import (
    Backoff,
    BackoffConfig,
    FailureKind,
    RetryConditions,
    is_retriable,
    parse_retry_after,
)


def test_ceilings_double_from_base_until_the_cap() -> None:
    backoff = Backoff()
    assert [backoff.ceiling(k) for k in range(6)] == [0.025, 0.05, 0.1, 0.2, 0.25, 0.25]
    assert backoff.ceiling(1000) == 0.25


@settings(deadline=None)  # wall-clock limits flake on a loaded CI box
@given(attempt=st.integers(min_value=0, max_value=50), seed=st.integers(0, 2**32))
def test_every_delay_is_within_zero_and_its_ceiling(attempt: int, seed: int) -> None:
    backoff = Backoff(BackoffConfig(base_s=0.025, cap_s=0.25), random.Random(seed))
    delay = backoff.delay(attempt)
    assert 0.0 <= delay <= min(0.25, 0.025 * 2**attempt)


def test_full_jitter_is_uniform_over_the_whole_range() -> None:
    backoff = Backoff(rng=random.Random(7))
    samples = [backoff.delay(2) for _ in range(20_000)]  # ceiling 100 ms
    assert statistics.fmean(samples) == pytest.approx(0.05, rel=0.03)
    # Uniform(0, c): each decile holds about a tenth of the samples.
    deciles = [0] * 10
    for s in samples:
        deciles[min(int(s / 0.01), 9)] += 1
    assert all(1700 < count < 2300 for count in deciles), deciles
    assert min(samples) < 0.001 and max(samples) > 0.099


def test_retry_after_overrides_and_is_capped() -> None:
    backoff = Backoff(BackoffConfig(retry_after_max_s=30.0), rng=random.Random(1))
    assert backoff.delay(0, retry_after_s=5.0) == 5.0
    assert backoff.delay(3, retry_after_s=3600.0) == 30.0
    assert backoff.delay(0, retry_after_s=-2.0) == 0.0


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(b" 0 ", now) == 0.0
    later = format_datetime(datetime(2024, 5, 1, 12, 0, 42, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now) == pytest.approx(42.0)
    earlier = "Wed, 01 May 2024 11:00:00 GMT"
    assert parse_retry_after(earlier, now) == 0.0
    for bad in (None, "", "-5", "1.5", "soon", "Wed, 99 Foo 2024"):
        assert parse_retry_after(bad, now) is None


def test_config_errors_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="must be >= base interval"):
        BackoffConfig(base_s=0.5, cap_s=0.1)
    with pytest.raises(ValueError, match="unsupported condition.*retriable-headers"):
        RetryConditions.from_flags({"5xx", "retriable-headers"})


CASES = [
    # (retry_on, status, grpc_status, failure, expected)
    ({"5xx"}, 500, None, None, True),
    ({"5xx"}, 503, None, None, True),
    ({"5xx"}, 404, None, None, False),
    ({"5xx"}, None, None, FailureKind.CONNECT_FAILURE, True),
    ({"5xx"}, None, None, FailureKind.TIMEOUT, True),
    ({"gateway-error"}, 500, None, None, False),
    ({"gateway-error"}, 502, None, None, True),
    ({"gateway-error"}, 504, None, None, True),
    ({"gateway-error"}, None, None, FailureKind.RESET, True),
    ({"connect-failure"}, None, None, FailureKind.CONNECT_FAILURE, True),
    ({"connect-failure"}, None, None, FailureKind.RESET, False),
    ({"connect-failure"}, 503, None, None, False),
    ({"refused-stream"}, None, None, FailureKind.REFUSED_STREAM, True),
    ({"refused-stream"}, None, None, FailureKind.CONNECT_FAILURE, False),
    ({"reset"}, None, None, FailureKind.RESET, True),
    ({"reset"}, None, None, FailureKind.TIMEOUT, True),
    ({"reset"}, 503, None, None, False),
    ({"retriable-4xx"}, 409, None, None, True),
    ({"retriable-4xx"}, 429, None, None, False),
    ({"retriable-status-codes"}, 429, None, None, True),
    ({"retriable-status-codes"}, 500, None, None, False),
    ({"unavailable"}, 200, 14, None, True),
    ({"unavailable"}, 200, 13, None, False),
    ({"cancelled", "deadline-exceeded", "internal", "resource-exhausted"}, 200, 1, None, True),
    ({"deadline-exceeded"}, 200, 4, None, True),
    ({"internal"}, 200, 13, None, True),
    ({"resource-exhausted"}, 200, 8, None, True),
    ({"unavailable"}, None, None, FailureKind.RESET, False),
    (set(), 503, 14, FailureKind.RESET, False),
    ({"5xx"}, 200, None, None, False),
]


@pytest.mark.parametrize(("retry_on", "status", "grpc_status", "failure", "expected"), CASES)
def test_retry_on_matches_envoy(retry_on: set[str], status: int | None,
                                grpc_status: int | None, failure: FailureKind | None,
                                expected: bool) -> None:
    assert is_retriable(retry_on, status, grpc_status, failure,
                        retriable_status_codes={429}) is expected


def test_hyphal_default_policy_retries_503_and_connect_failures() -> None:
    # RetryPolicy.istio_default() in the runtime tables.
    conditions = RetryConditions.from_flags(
        {"connect-failure", "refused-stream", "unavailable", "cancelled",
         "retriable-status-codes"}, {503})
    assert conditions.should_retry(503)
    assert not conditions.should_retry(500)
    assert conditions.should_retry(None, failure="connect_failure")
    assert not conditions.should_retry(None, failure="timeout")
