"""Circuit breaker counters: limits, refusal reasons, releases that never go negative."""

from __future__ import annotations

from hyphal.proxy.resilience.breaker import BreakerLimits, CircuitBreaker, Refusal


def test_requests_beyond_max_requests_are_refused_as_circuit_open() -> None:
    breaker = CircuitBreaker(BreakerLimits(max_requests=2))
    assert breaker.admit_request() and breaker.admit_request()
    refused = breaker.admit_request()
    assert not refused
    assert refused.reason is Refusal.CIRCUIT_OPEN
    assert str(refused.reason) == "circuit_open"  # what goes in the header and access log
    assert refused.limit == "max_requests" and refused.threshold == 2
    breaker.release_request()
    assert breaker.admit_request()
    assert breaker.stats().overflows["circuit_open"] == 1


def test_pending_overflow() -> None:
    breaker = CircuitBreaker(BreakerLimits(max_pending_requests=1))
    assert breaker.admit_pending()
    refused = breaker.admit_pending()
    assert refused.reason == "pending_overflow" and refused.limit == "max_pending_requests"
    breaker.release_pending()
    assert breaker.admit_pending()


def test_connections_and_retries_have_their_own_limits() -> None:
    breaker = CircuitBreaker(BreakerLimits(max_connections=1, max_retries=2))
    assert breaker.admit_connection()
    assert breaker.admit_connection().reason is Refusal.CONNECTION_OVERFLOW
    assert breaker.admit_retry() and breaker.admit_retry()
    assert breaker.admit_retry().reason is Refusal.RETRY_OVERFLOW
    # Requests are untouched by the other counters.
    assert breaker.admit_request()


def test_releases_never_go_negative_and_are_counted() -> None:
    breaker = CircuitBreaker(BreakerLimits(max_requests=1))
    breaker.release_request()
    breaker.release_pending()
    breaker.release_connection()
    breaker.release_retry()
    stats = breaker.stats()
    assert (stats.requests, stats.pending, stats.connections, stats.retries) == (0, 0, 0, 0)
    assert stats.underflows == 4
    # A double release must not widen the breaker.
    assert breaker.admit_request()
    assert not breaker.admit_request()


def test_zero_limit_refuses_everything_and_limits_can_change() -> None:
    breaker = CircuitBreaker(BreakerLimits(max_retries=0))
    assert not breaker.admit_retry()
    breaker.update_limits(BreakerLimits(max_retries=1))
    assert breaker.admit_retry()
    assert breaker.admit_retry().threshold == 1
