"""Adapters from the runtime tables, and the EndpointPicker facade over every lb policy."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from hyphal.proxy.resilience.adapters import (
    EndpointPicker,
    backoff_config,
    breaker_limits,
    health_check_config,
    outlier_config,
    retry_conditions,
)
from hyphal.proxy.resilience.balancers import PeakEwma
from hyphal.proxy.runtime.tables import (
    CircuitBreaker,
    EndpointSpec,
    HealthCheckSpec,
    LbPolicy,
    OutlierSpec,
    RetryPolicy,
)

ENDPOINTS = (EndpointSpec("127.0.0.1", 9001, weight=1), EndpointSpec("127.0.0.1", 9002, weight=3))


def test_configs_carry_the_compiled_values() -> None:
    outlier = outlier_config(OutlierSpec(consecutive_5xx=3, consecutive_gateway_failure=0,
                                         interval_s=1.0, base_ejection_time_s=2.0,
                                         max_ejection_percent=50))
    assert outlier.consecutive_5xx == 3 and outlier.consecutive_gateway_failure is None
    assert outlier.base_ejection_time_s == 2.0 and outlier.max_ejection_percent == 50
    limits = breaker_limits(CircuitBreaker(max_connections=5, max_pending_requests=6,
                                           max_requests=7, max_retries=8))
    assert (limits.max_connections, limits.max_pending_requests, limits.max_requests,
            limits.max_retries) == (5, 6, 7, 8)
    policy = RetryPolicy(retry_on=frozenset({"gateway-error"}), base_interval_s=0.01,
                         max_interval_s=0.05)
    assert retry_conditions(policy).should_retry(502)
    assert not retry_conditions(policy).should_retry(500)
    assert backoff_config(policy).cap_s == 0.05
    health = health_check_config(HealthCheckSpec(interval_s=2.0, unhealthy_threshold=3))
    assert health.interval_s == 2.0 and health.unhealthy_threshold == 3


def test_unsupported_retry_on_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="retriable-headers"):
        retry_conditions(RetryPolicy(retry_on=frozenset({"retriable-headers"})))


@pytest.mark.parametrize("policy", [*LbPolicy, "peak_ewma"])
def test_every_policy_picks_by_weight_and_honours_exclude(policy: str) -> None:
    picker = EndpointPicker(policy, ENDPOINTS, {}, random.Random(4))
    counts = Counter(
        e.port for i in range(4000)
        if (e := picker.pick(float(i), hash_key=f"k{i}".encode())) is not None
    )
    if policy != "peak_ewma":  # peak EWMA balances on latency, not weight
        assert counts[9002] / 4000 == pytest.approx(0.75, abs=0.05)
    excluded = picker.pick(0.0, exclude={"127.0.0.1:9002"}, hash_key=b"k")
    assert excluded is not None and excluded.port == 9001
    assert picker.pick(0.0, exclude={"127.0.0.1:9001", "127.0.0.1:9002"}) is None


def test_hash_policies_are_sticky_and_random_without_a_key() -> None:
    picker = EndpointPicker(LbPolicy.MAGLEV, ENDPOINTS, {}, random.Random(1))
    first = picker.pick(0.0, hash_key=b"alice")
    assert all(picker.pick(0.0, hash_key=b"alice") == first for _ in range(50))
    assert len({getattr(picker.pick(0.0), "port", None) for _ in range(200)}) == 2


def test_peak_ewma_estimates_survive_a_rebuild() -> None:
    old = EndpointPicker("peak_ewma", ENDPOINTS, {})
    old.observe("127.0.0.1:9001", 0.5, 1.0)
    new = EndpointPicker("peak_ewma", (*ENDPOINTS, EndpointSpec("127.0.0.1", 9003)), {},
                         now=1.0, previous=old)
    assert isinstance(new.picker, PeakEwma)
    assert new.picker.estimate("127.0.0.1:9001", 1.0) == 0.5


def test_unknown_policy_is_named() -> None:
    with pytest.raises(ValueError, match="lb_policy 'least_conn' is not supported"):
        EndpointPicker("least_conn", ENDPOINTS, {})
