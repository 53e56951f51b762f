"""Retry budgets: 20% of requests + a floor of 3/s over a sliding window; Envoy's concurrency form."""

from __future__ import annotations

import pytest

from hyphal.proxy.resilience.budget import (
    ConcurrencyRetryBudget,
    ConcurrencyRetryBudgetConfig,
    RetryBudget,
    RetryBudgetConfig,
)


def test_idle_cluster_gets_the_floor_reserve() -> None:
    budget = RetryBudget()  # 20%, 3/s, 10 s window: reserve 30
    allowed = sum(budget.try_withdraw(100.0) for _ in range(100))
    assert allowed == 30


def test_budget_is_twenty_percent_of_requests_plus_the_floor() -> None:
    budget = RetryBudget()
    for i in range(1000):
        budget.record_request(50.0 + i * 0.001)
    assert budget.allowance(51.0) == pytest.approx(0.2 * 1000 + 30)
    allowed = sum(budget.try_withdraw(51.0) for _ in range(1000))
    assert allowed == 230
    assert budget.window_counts(51.0) == (1000, 230)


def test_a_retry_storm_is_capped_at_twenty_percent_plus_three_per_second() -> None:
    budget = RetryBudget()
    rate = 500  # requests per second, every one failing and wanting a retry
    seconds = 60
    retries = 0
    for tick in range(seconds * rate):
        now = tick / rate
        budget.record_request(now)
        retries += budget.try_withdraw(now)
    # Steady state: 20% of 500/s + 3/s = 103/s; the first window adds at most the reserve.
    assert retries <= (0.2 * rate + 3) * seconds + 30 + 1
    assert retries >= (0.2 * rate + 3) * seconds * 0.95
    sent = seconds * rate
    assert retries / sent < 0.22


def test_the_window_slides_and_old_requests_stop_counting() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_per_s=0.0, window_s=10.0))
    for _ in range(100):
        budget.record_request(0.0)
    assert budget.allowance(9.9) == pytest.approx(20)
    assert budget.allowance(10.05) == pytest.approx(0)
    assert not budget.can_retry(10.05)
    # A long gap clears everything without walking more than one ring.
    assert budget.window_counts(10_000.0) == (0, 0)


def test_retries_spent_leave_the_window_too() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.0, min_per_s=1.0, window_s=2.0, buckets=20))
    assert sum(budget.try_withdraw(0.0) for _ in range(5)) == 2
    assert not budget.try_withdraw(1.9)
    assert budget.try_withdraw(2.05)  # the t=0 retries aged out


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="min_per_s"):
        RetryBudgetConfig(min_per_s=-1)
    with pytest.raises(ValueError, match="budget_percent"):
        ConcurrencyRetryBudgetConfig(budget_percent=150)


def test_envoy_concurrency_budget() -> None:
    budget = ConcurrencyRetryBudget()  # 20%, min 3 concurrent
    assert budget.max_retries() == 3
    started = [budget.try_start_retry() for _ in range(5)]
    assert started == [True, True, True, False, False]
    for _ in range(100):
        budget.request_started()
    assert budget.max_retries() == 20
    assert sum(budget.try_start_retry() for _ in range(50)) == 17
    for _ in range(200):
        budget.retry_finished()
        budget.request_finished()
    assert budget.active_retries == 0 and budget.active_requests == 0
