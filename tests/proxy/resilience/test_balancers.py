"""Round robin, random, least request (P2C) and peak EWMA pickers."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyphal.proxy.resilience.balancers import (
    InFlight,
    LeastRequest,
    PeakEwma,
    Random,
    RoundRobin,
    smooth_weighted_schedule,
)

KEYS = ("a:1", "b:1", "c:1")


def shares(counts: Counter[str | None], total: int) -> dict[str | None, float]:
    return {k: counts[k] / total for k in counts}


def test_smooth_weighted_round_robin_is_nginx_sequence() -> None:
    # nginx's documented example: weights 5, 1, 1 -> a a b a c a a
    assert smooth_weighted_schedule([5, 1, 1]) == (0, 0, 1, 0, 2, 0, 0)
    assert smooth_weighted_schedule([2, 4]) == (1, 0, 1)  # reduced by gcd


@settings(deadline=None)  # wall-clock limits flake on a loaded CI box
@given(weights=st.lists(st.integers(1, 20), min_size=1, max_size=8),
       seed=st.integers(0, 1000))
def test_round_robin_serves_exact_weights_over_each_period(weights: list[int], seed: int) -> None:
    keys = tuple(f"h{i}:80" for i in range(len(weights)))
    rr = RoundRobin(keys, weights, random.Random(seed))
    total = sum(weights)
    counts: Counter[str | None] = Counter(rr.pick() for _ in range(total * 3))
    assert all(counts[k] == 3 * w for k, w in zip(keys, weights))


def test_round_robin_skips_excluded_and_returns_none_when_all_are() -> None:
    rr = RoundRobin(KEYS, rng=random.Random(1))
    picks = [rr.pick(exclude={"b:1"}) for _ in range(10)]
    assert "b:1" not in picks and set(picks) == {"a:1", "c:1"}
    assert rr.pick(exclude=set(KEYS)) is None
    assert RoundRobin(()).pick() is None


def test_round_robin_live_mode_for_huge_periods() -> None:
    weights = [100_003, 100_019]  # coprime: period > 65,536, no precomputed schedule
    rr = RoundRobin(("x:1", "y:1"), weights, random.Random(0))
    counts = Counter(rr.pick() for _ in range(10_000))
    assert abs(counts["x:1"] - 5000) <= 2
    assert rr.pick(exclude={"x:1"}) == "y:1"


def test_weighted_random_distribution_within_tolerance() -> None:
    rnd = Random(KEYS, [1, 2, 7], random.Random(3))
    n = 50_000
    got = shares(Counter(rnd.pick() for _ in range(n)), n)
    for key, want in zip(KEYS, (0.1, 0.2, 0.7)):
        assert got[key] == pytest.approx(want, abs=0.01)
    assert all(rnd.pick(exclude={"c:1"}) != "c:1" for _ in range(200))
    assert rnd.pick(exclude=set(KEYS)) is None


def test_weights_are_validated() -> None:
    with pytest.raises(ValueError, match="load_balancing_weight must be >= 1"):
        Random(KEYS, [1, 0, 1])
    with pytest.raises(ValueError, match="3 endpoints but 2 weights"):
        RoundRobin(KEYS, [1, 1])


def test_least_request_prefers_the_less_loaded() -> None:
    active = InFlight()
    lr = LeastRequest(KEYS, active, rng=random.Random(5))
    for _ in range(10):
        active.start("a:1")
    active.start("b:1")
    counts = Counter(lr.pick() for _ in range(3000))
    # P2C over 3: "c" (idle) wins every pair it is in (2/3), "b" beats "a" (1/3); "a" never.
    assert counts["a:1"] == 0
    assert counts["c:1"] / 3000 == pytest.approx(2 / 3, abs=0.03)


def test_least_request_balances_a_closed_loop() -> None:
    active = InFlight()
    lr = LeastRequest(KEYS, active, rng=random.Random(9))
    for _ in range(300):
        key = lr.pick()
        assert key is not None
        active.start(key)
    assert max(active.values()) - min(active.values()) <= 2


def test_weighted_least_request_uses_active_request_bias() -> None:
    active: dict[str, int] = {"a:1": 4, "b:1": 0}
    lr = LeastRequest(("a:1", "b:1"), active, [10, 1], random.Random(2))
    # Envoy's EDF: effective weights a: 10 / (4 + 1) = 2, b: 1 / 1 -> a gets 2/3.
    counts = Counter(lr.pick() for _ in range(3000))
    assert counts["a:1"] / 3000 == pytest.approx(2 / 3, abs=0.01)
    flat = LeastRequest(("a:1", "b:1"), active, [10, 1], random.Random(2),
                        active_request_bias=0.0)
    assert Counter(flat.pick() for _ in range(2200))["a:1"] == pytest.approx(2000, abs=2)
    # Idle endpoints share by weight; exclusion leaves the others' order intact.
    idle = LeastRequest(("a:1", "b:1", "c:1"), {}, [1, 2, 3], random.Random(3))
    got = Counter(idle.pick() for _ in range(600))
    assert (got["a:1"], got["b:1"], got["c:1"]) == (100, 200, 300)
    assert all(idle.pick(exclude={"c:1"}) != "c:1" for _ in range(50))
    assert idle.pick(exclude={"a:1", "b:1", "c:1"}) is None


def test_inflight_never_goes_negative() -> None:
    active = InFlight()
    active.finish("a:1")
    active.start("a:1")
    active.finish("a:1")
    active.finish("a:1")
    assert active.get("a:1", 0) == 0 and "a:1" not in active


def test_peak_ewma_moves_traffic_off_a_slow_endpoint_within_a_few_observations() -> None:
    active = InFlight()
    keys = ("fast1:80", "fast2:80", "slow:80")
    latency = {"fast1:80": 0.010, "fast2:80": 0.010, "slow:80": 0.200}
    lb = PeakEwma(keys, active, rng=random.Random(4))
    now = 0.0
    slow_picks_after: list[int] = []
    first_slow_observed_at: int | None = None
    for i in range(400):
        key = lb.pick(now)
        assert key is not None
        now += 0.005
        lb.observe(key, latency[key], now)
        if key == "slow:80" and first_slow_observed_at is None:
            first_slow_observed_at = i
        elif first_slow_observed_at is not None and key == "slow:80":
            slow_picks_after.append(i)
    assert first_slow_observed_at is not None and first_slow_observed_at < 20
    # Peak sensitivity: one 200 ms sample makes "slow" lose every comparison for a while.
    assert len(slow_picks_after) <= 4
    assert lb.estimate("slow:80", now) > lb.estimate("fast1:80", now)


def test_peak_ewma_estimate_decays_and_averages_faster_samples() -> None:
    lb = PeakEwma(("a:1",), {}, decay_s=10.0, default_rtt_s=0.030)
    lb.observe("a:1", 0.5, 1.0)
    assert lb.estimate("a:1", 1.0) == 0.5  # peak: replaces at once
    assert lb.estimate("a:1", 11.0) == pytest.approx(0.5 * 0.36788, rel=1e-4)  # e^-1
    lb.observe("a:1", 0.1, 1.0 + 10.0)
    # prior decayed to 0.184 > 0.1: EWMA blend 0.5*e^-1 + 0.1*(1-e^-1)
    assert lb.estimate("a:1", 11.0) == pytest.approx(0.5 * 0.36788 + 0.1 * 0.63212, rel=1e-4)


def test_peak_ewma_cost_counts_requests_in_flight() -> None:
    active = {"a:1": 5}
    lb = PeakEwma(("a:1", "b:1"), active, rng=random.Random(1))
    assert all(lb.pick(0.0) == "b:1" for _ in range(50))  # same estimate, b is idle
    assert lb.pick(0.0, exclude={"b:1"}) == "a:1"
    rebuilt = PeakEwma(("a:1", "b:1", "c:1"), active, previous=lb)
    lb.observe("a:1", 1.0, 1.0)
    assert rebuilt.estimate("a:1", 0.0) == pytest.approx(0.030)
