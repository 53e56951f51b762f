"""Outlier detection: consecutive detectors, growing ejection times, max ejection percent,
un-ejection, and the panic threshold."""

from __future__ import annotations

import pytest

from hyphal.proxy.resilience.backoff import FailureKind
from hyphal.proxy.resilience.outlier import EjectionReason, OutlierConfig, OutlierDetector

HOSTS = tuple(f"10.0.0.{i}:80" for i in range(10))
A = HOSTS[0]


def detector(**overrides: object) -> OutlierDetector:
    config = OutlierConfig(**{"max_ejection_percent": 100, **overrides})  # type: ignore[arg-type]
    return OutlierDetector(config, HOSTS)


def fail(d: OutlierDetector, key: str, n: int, now: float,
         outcome: int | FailureKind = 500) -> None:
    for _ in range(n):
        d.record(key, outcome, now)


def test_five_consecutive_5xx_eject_and_a_success_resets_the_count() -> None:
    d = detector()
    fail(d, A, 4, 0.0)
    d.record(A, 200, 0.0)
    fail(d, A, 4, 0.0)
    assert not d.is_ejected(A, 0.0)
    ejection = d.record(A, 500, 1.0)
    assert ejection is not None
    assert ejection.reason is EjectionReason.CONSECUTIVE_5XX
    assert ejection.until == 31.0 and ejection.times_ejected == 1
    assert d.is_ejected(A, 30.9)
    assert A in d.excluded(30.9)


def test_ejection_time_grows_with_each_ejection_and_is_capped() -> None:
    d = detector(base_ejection_time_s=30.0, max_ejection_time_s=100.0)
    durations = []
    now = 0.0
    for _ in range(5):
        fail(d, A, 4, now)
        ejection = d.record(A, 503, now)
        assert ejection is not None
        durations.append(ejection.until - now)
        now = ejection.until  # back in service, fails again at once
    assert durations == [30.0, 60.0, 90.0, 100.0, 100.0]


def test_unejection_after_the_time_and_sweeps_forgive_one_ejection_per_interval() -> None:
    d = detector(base_ejection_time_s=30.0, interval_s=10.0)
    fail(d, A, 5, 0.0)
    fail(d, A, 5, 30.0)  # ejected at 0 (30 s), again at 30 (60 s): out until 90
    assert d.times_ejected(A) == 2
    assert d.sweep(50.0) == ()
    assert d.is_ejected(A, 89.0)
    assert d.sweep(90.0) == (A,)
    assert not d.is_ejected(A, 90.0)
    assert d.times_ejected(A) == 2  # not forgiven in the sweep that returns it
    d.sweep(100.0)
    d.sweep(110.0)
    assert d.times_ejected(A) == 0
    ejection = d.record(A, 500, 111.0)
    assert ejection is None  # counter restarted at the ejection
    fail(d, A, 4, 111.0)
    assert d.stats(111.0).ejections_total == 3
    assert d.is_ejected(A, 140.9) and not d.is_ejected(A, 141.0)  # multiplier back to 1


def test_gateway_failures_and_local_origin_failures_unsplit() -> None:
    d = detector(consecutive_5xx=None, consecutive_gateway_failure=3)
    fail(d, A, 2, 0.0, 502)
    d.record(A, 500, 0.0)  # a 5xx that is not a gateway error resets the gateway count
    fail(d, A, 2, 0.0, FailureKind.CONNECT_FAILURE)
    assert not d.is_ejected(A, 0.0)
    ejection = d.record(A, FailureKind.TIMEOUT, 0.0)  # a 504 in Envoy's mapping
    assert ejection is not None and ejection.reason is EjectionReason.CONSECUTIVE_GATEWAY_FAILURE


def test_split_local_origin_errors_use_their_own_counter() -> None:
    d = detector(split_external_local_origin_errors=True, consecutive_local_origin_failure=2)
    d.record(A, FailureKind.CONNECT_FAILURE, 0.0)
    d.record(A, 200, 0.0)  # any response resets the local-origin count
    fail(d, A, 4, 0.0, 500)  # 5xx are counted apart (and reset the local-origin count)
    assert d.record(A, FailureKind.RESET, 0.0) is None  # not a 5th 5xx: split
    ejection = d.record(A, "connect_failure", 0.0)
    assert ejection is not None
    assert ejection.reason is EjectionReason.CONSECUTIVE_LOCAL_ORIGIN_FAILURE


def test_max_ejection_percent_limits_ejections() -> None:
    d = detector(max_ejection_percent=30)
    for host in HOSTS[:5]:
        fail(d, host, 5, 0.0)
    stats = d.stats(0.0)
    assert stats.ejections_active == 3
    assert stats.ejections_overflow == 2
    assert len(d.excluded(0.0)) == 3
    # When one returns, another may go.
    d.sweep(31.0)
    fail(d, HOSTS[4], 5, 31.0)
    assert d.is_ejected(HOSTS[4], 31.0)


def test_small_clusters_need_always_eject_one_host_at_ten_percent() -> None:
    hosts = HOSTS[:3]
    strict = OutlierDetector(OutlierConfig(max_ejection_percent=10), hosts)
    fail(strict, hosts[0], 5, 0.0)
    assert not strict.is_ejected(hosts[0], 0.0)
    lenient = OutlierDetector(OutlierConfig(max_ejection_percent=10,
                                            always_eject_one_host=True), hosts)
    fail(lenient, hosts[0], 5, 0.0)
    fail(lenient, hosts[1], 5, 0.0)
    assert lenient.is_ejected(hosts[0], 0.0) and not lenient.is_ejected(hosts[1], 0.0)


def test_hosts_for_balancing_drops_ejected_hosts_and_panics_below_the_threshold() -> None:
    d = detector(healthy_panic_threshold=50.0)
    assert d.hosts_for_balancing(HOSTS, 0.0) is HOSTS
    for host in HOSTS[:5]:
        fail(d, host, 5, 0.0)
    assert d.hosts_for_balancing(HOSTS, 0.0) == HOSTS[5:]  # 50% healthy: not below
    assert not d.in_panic(HOSTS, 0.0)
    fail(d, HOSTS[5], 5, 0.0)
    assert d.hosts_for_balancing(HOSTS, 0.0) == HOSTS  # 40% healthy: panic
    assert d.in_panic(HOSTS, 0.0)
    # Active health-check failures count as unhealthy too.
    d2 = detector()
    assert d2.hosts_for_balancing(HOSTS, 0.0, unhealthy={HOSTS[0]}) == HOSTS[1:]


def test_panic_threshold_zero_disables_panic() -> None:
    d = detector(healthy_panic_threshold=0.0)
    for host in HOSTS:
        fail(d, host, 5, 0.0)
    assert d.hosts_for_balancing(HOSTS, 0.0) == ()


def test_endpoint_set_changes_keep_state_of_those_that_stay() -> None:
    d = detector()
    fail(d, A, 5, 0.0)
    d.set_hosts(HOSTS[:5])
    assert d.is_ejected(A, 1.0)
    d.set_hosts(HOSTS[1:5])
    assert not d.is_ejected(A, 1.0)
    assert d.record(A, 500, 1.0) is None  # unknown keys are ignored


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="max_ejection_time"):
        OutlierConfig(base_ejection_time_s=30, max_ejection_time_s=10)
    with pytest.raises(ValueError, match="max_ejection_percent"):
        OutlierConfig(max_ejection_percent=150)
