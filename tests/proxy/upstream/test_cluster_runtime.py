"""ClusterRuntime wiring of the resilience cores: defaults users get, state across swaps."""

from __future__ import annotations

import random
from dataclasses import replace

from hyphal.proxy.resilience.backoff import FailureKind
from hyphal.proxy.runtime.tables import (
    CircuitBreaker,
    ClusterSpec,
    EndpointSpec,
    HashPolicy,
    LbPolicy,
    OutlierSpec,
    RetryPolicy,
)
from hyphal.proxy.upstream.cluster import (
    EJECTION_METRIC,
    OVERFLOW_METRIC,
    ClusterManager,
    ClusterRuntime,
)
from hyphal.proxy.upstream.policy import (
    caller_budget,
    effective_deadline,
    request_hash_key,
    retry_after,
    shadow_authority,
    with_deadline,
)
from hyphal.proxy.upstream.pool import ConnectionPool
from hyphal.telemetry.stats import Stats

A, B, C = (EndpointSpec("10.0.0.1", p) for p in (81, 82, 83))


def spec(**kw: object) -> ClusterSpec:
    base = ClusterSpec(name="c", endpoints=(A, B, C))
    return replace(base, **kw)  # type: ignore[arg-type]


def test_one_of_three_is_ejected_with_the_default_outlier_detection() -> None:
    rt = ClusterRuntime(spec(outlier=OutlierSpec()), rng=random.Random(1))
    for _ in range(5):  # Envoy's default: 5 consecutive 5xx (connect failures count as 503)
        rt.finish(B.address, FailureKind.CONNECT_FAILURE, None, 100.0)
    assert rt.ejected(100.0) == {B.address}
    assert rt.stats.counter(EJECTION_METRIC, "c") == 1
    picks = {rt.pick(now=100.5).address for _ in range(60)}  # type: ignore[union-attr]
    assert picks == {A.address, C.address}
    # A second host is not ejected at 10%: the panic threshold is not the only guard.
    for _ in range(5):
        rt.finish(C.address, 503, None, 101.0)
    assert rt.ejected(101.0) == {B.address}
    # Ejected hosts return after base_ejection_time (30 s).
    assert rt.ejected(131.0) == frozenset()


def test_panic_threshold_balances_over_everyone() -> None:
    rt = ClusterRuntime(spec(endpoints=(A, B), outlier=OutlierSpec(
        consecutive_5xx=1, max_ejection_percent=100, healthy_panic_threshold=60.0)))
    rt.finish(A.address, 500, None, 1.0)
    assert rt.ejected(1.0) == {A.address}
    # 1 healthy of 2 = 50% < 60%: panic, both take traffic.
    picks = {rt.pick(now=1.1).address for _ in range(50)}  # type: ignore[union-attr]
    assert picks == {A.address, B.address}


def test_state_survives_a_config_swap() -> None:
    stats = Stats()
    manager = ClusterManager(ConnectionPool(None, stats))
    first = manager.runtime(spec(outlier=OutlierSpec(consecutive_5xx=1)))
    first.finish(A.address, 500, None, 5.0)
    assert first.admit(5.0) is None  # one request in flight
    d = EndpointSpec("10.0.0.1", 84)
    second = manager.runtime(spec(endpoints=(A, B, C, d), outlier=OutlierSpec(consecutive_5xx=1)))
    assert second is not first
    assert second.ejected(5.5) == {A.address}  # ejection kept
    assert second.breaker.requests == 1  # breaker counts kept
    assert second.budget is first.budget
    same = manager.runtime(spec(endpoints=(A, B, C, d), outlier=OutlierSpec(consecutive_5xx=1)))
    assert same is second  # an equal spec is not a rebuild


def test_circuit_open_and_retry_overflow_are_counted() -> None:
    rt = ClusterRuntime(spec(circuit_breaker=CircuitBreaker(max_requests=1, max_retries=0)))
    assert rt.admit(0.0) is None
    assert rt.admit(0.0) == "circuit_open"
    assert rt.admit_retry(0.0) == "retry_overflow"
    assert rt.stats.labeled(OVERFLOW_METRIC, (("cluster", "c"), ("reason", "circuit_open"))) == 1
    rt.release()
    assert rt.admit(0.0) is None


def test_retry_budget_is_20_percent_plus_3_per_second() -> None:
    rt = ClusterRuntime(spec())
    for _ in range(100):
        assert rt.admit(0.0) is None
        rt.release()
    allowed = 0
    while rt.admit_retry(0.0) is None:
        rt.release_retry()
        allowed += 1
        assert allowed < 1000
    assert allowed == 20 + 30  # 20% of 100 requests + the 3/s reserve over a 10 s window
    reason = (("cluster", "c"), ("reason", "retry_budget_exhausted"))
    assert rt.stats.labeled(OVERFLOW_METRIC, reason) == 1


def test_retries_avoid_the_endpoint_that_failed() -> None:
    rt = ClusterRuntime(spec(), rng=random.Random(3))
    for _ in range(30):
        first = rt.pick(now=0.0)
        assert first is not None
        again = rt.pick({first.address}, now=0.0)
        assert again is not None and again.address != first.address
    only = ClusterRuntime(spec(endpoints=(A,)))
    assert only.pick({A.address}, now=0.0) == A  # no other: the same one is retried


def test_istio_default_retry_conditions() -> None:
    rt = ClusterRuntime(spec())
    cond = rt.conditions(RetryPolicy.istio_default())
    assert cond.should_retry(503) and not cond.should_retry(500) and not cond.should_retry(502)
    assert cond.should_retry(None, None, FailureKind.CONNECT_FAILURE)
    assert not cond.should_retry(None, None, FailureKind.TIMEOUT)
    custom = rt.conditions(RetryPolicy(retry_on=frozenset({"5xx", "retriable-4xx"}),
                                       retriable_status_codes=frozenset()))
    assert custom.should_retry(500) and custom.should_retry(409) and not custom.should_retry(404)


def test_backoff_is_full_jitter_25ms_to_250ms() -> None:
    rt = ClusterRuntime(spec(), rng=random.Random(7))
    backoff = rt.backoff(RetryPolicy())
    for attempt, ceiling in ((0, 0.025), (1, 0.05), (2, 0.1), (3, 0.2), (4, 0.25), (9, 0.25)):
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert max(delays) <= ceiling and max(delays) > ceiling * 0.8
    assert backoff.delay(0, retry_after_s=2.0) == 2.0


def test_peak_ewma_and_hashing_are_built_from_the_spec() -> None:
    rt = ClusterRuntime(spec(lb=LbPolicy.PEAK_EWMA), rng=random.Random(5))
    rt.finish(C.address, 200, 0.5, 1.0)  # C answered slowly once
    rt.finish(A.address, 200, 0.002, 1.0)
    rt.finish(B.address, 200, 0.002, 1.0)
    picks = [rt.pick(now=1.1).address for _ in range(100)]  # type: ignore[union-attr]
    assert picks.count(C.address) == 0
    ring = ClusterRuntime(spec(lb=LbPolicy.MAGLEV, maglev_table_size=251))
    key = b"user-1"
    assert len({ring.pick(hash_key=key, now=0.0).address for _ in range(20)}) == 1  # type: ignore[union-attr]


def test_caller_deadline_in_and_out() -> None:
    budget = caller_budget([(b"Host", b"x"), (b"X-Hyphal-Deadline", b"1500")])
    assert budget.remaining_s == 1.5 and budget.headers == [(b"Host", b"x")]
    grpc = caller_budget([(b"content-type", b"application/grpc"), (b"grpc-timeout", b"200m")])
    assert grpc.grpc and grpc.remaining_s == 0.2
    none = caller_budget([(b"Host", b"x")])
    assert none.remaining_s is None and none.headers is None
    deadline = effective_deadline(10.0, 15.0, 1.5)
    assert deadline == 11.5  # the caller's budget is shorter than the route timeout
    assert effective_deadline(10.0, None, None) is None
    head = with_deadline(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 11.5, True, now=10.25)
    assert head.endswith(b"x-hyphal-deadline: 1250\r\ngrpc-timeout: 1250000u\r\n\r\n")


def test_retry_after_shadow_and_sticky_cookie() -> None:
    assert retry_after([(b"Retry-After", b"3")]) == 3.0
    assert retry_after([(b"x", b"y")]) is None
    assert shadow_authority("api:8080") == "api-shadow:8080"
    assert shadow_authority("api") == "api-shadow"
    policy = (HashPolicy(cookie="sticky", cookie_ttl_s=60.0),)
    made = request_hash_key(policy, [], "", "127.0.0.1", random.Random(1))
    assert made.key is not None and made.set_cookie is not None
    assert made.set_cookie.startswith("sticky=") and "Max-Age=60" in made.set_cookie
    cookie = made.set_cookie.split(";")[0]
    again = request_hash_key(policy, [(b"Cookie", cookie.encode())], "", "127.0.0.1",
                             random.Random(2))
    assert again.key == made.key and again.set_cookie is None
    by_query = request_hash_key((HashPolicy(query_parameter="u"),), [], "u=42", "1.2.3.4",
                                random.Random())
    assert by_query.key == b"42"
    by_ip = request_hash_key((HashPolicy(source_ip=True),), [], "", "1.2.3.4", random.Random())
    assert by_ip.key == b"1.2.3.4"


def test_a_single_endpoint_is_picked_as_the_balancer_would() -> None:
    # One endpoint: the runtime answers without its balancer, except where the balancer's
    # pick draws from the shared rng (random, and hashing without a key), which must go on.
    for lb in LbPolicy:
        rt = ClusterRuntime(spec(endpoints=(A,), lb=lb), rng=random.Random(3))
        assert rt.pick(now=1.0) is A and rt.pick({A.address}, now=1.0) is A
        state = rt.rng.getstate()
        rt.pick(now=1.0)
        drew = rt.rng.getstate() != state
        assert drew == (lb in (LbPolicy.RANDOM, LbPolicy.RING_HASH, LbPolicy.MAGLEV)), lb
    ejecting = ClusterRuntime(spec(endpoints=(A,), outlier=OutlierSpec(consecutive_5xx=1)))
    ejecting.finish(A.address, 503, None, 10.0)
    assert ejecting.ejected(10.0) == {A.address}
    assert ejecting.pick(now=10.0) is A  # the panic threshold: every endpoint again
