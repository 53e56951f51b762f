"""Benchmark: per-request cost of the resilience cores (pickers, outlier, breaker, budget, ...).

    .venv/bin/python bench/bench_resilience.py [--endpoints 10] [--n 200000]

Prints nanoseconds per call (best of 3 runs of N calls each) and the config-time build cost
of the consistent-hash tables. Target: every per-request call a few microseconds at most.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections.abc import Callable

from hyphal.proxy.resilience.backoff import Backoff, RetryConditions
from hyphal.proxy.resilience.balancers import (
    InFlight,
    LeastRequest,
    PeakEwma,
    Random,
    RoundRobin,
)
from hyphal.proxy.resilience.breaker import CircuitBreaker
from hyphal.proxy.resilience.budget import RetryBudget
from hyphal.proxy.resilience.consistent_hash import Maglev, RingHash
from hyphal.proxy.resilience.deadline import Deadline, format_grpc_timeout, parse_grpc_timeout
from hyphal.proxy.resilience.hash_policy import HashPolicy, hash_key_for
from hyphal.proxy.resilience.outlier import OutlierDetector


def per_call_ns(fn: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    n = args.n
    rng = random.Random(1)
    keys = tuple(f"10.0.{i // 256}.{i % 256}:8080" for i in range(args.endpoints))
    weights = [1 + i % 3 for i in range(len(keys))]
    active = InFlight()
    excluded = frozenset(keys[:1])

    started = time.perf_counter()
    ring = RingHash(keys, weights)
    ring_build = time.perf_counter() - started
    started = time.perf_counter()
    maglev = Maglev(keys, weights)
    maglev_build = time.perf_counter() - started

    rr = RoundRobin(keys, weights, rng)
    rnd = Random(keys, weights, rng)
    lr = LeastRequest(keys, active, rng=rng)
    ewma = PeakEwma(keys, active, rng=rng)
    outlier = OutlierDetector(hosts=keys)
    breaker = CircuitBreaker()
    budget = RetryBudget()
    backoff = Backoff(rng=rng)
    conditions = RetryConditions.from_flags({"5xx", "connect-failure", "unavailable"})
    policy = (HashPolicy(header="x-user"), HashPolicy(cookie="sid"))
    headers = {"x-user": "alice", "cookie": "sid=abc"}
    clock = [0.0]

    def tick() -> float:
        clock[0] += 0.0001
        return clock[0]

    def ewma_round() -> None:
        now = tick()
        key = ewma.pick(now)
        assert key is not None
        ewma.observe(key, 0.01, now)

    def breaker_round() -> None:
        breaker.admit_request()
        breaker.release_request()

    def budget_round() -> None:
        now = tick()
        budget.record_request(now)
        budget.try_withdraw(now)

    def outlier_round() -> None:
        now = tick()
        outlier.record(keys[0], 200, now)
        outlier.hosts_for_balancing(keys, now)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("RoundRobin.pick", rr.pick),
        ("RoundRobin.pick (1 excluded)", lambda: rr.pick(excluded)),
        ("Random.pick (weighted)", rnd.pick),
        ("LeastRequest.pick", lr.pick),
        ("PeakEwma.pick + observe", ewma_round),
        ("RingHash.pick", lambda: ring.pick(b"user-12345")),
        ("Maglev.pick", lambda: maglev.pick(b"user-12345")),
        ("hash_key_for (header)", lambda: hash_key_for(policy, headers)),
        ("OutlierDetector.record + hosts_for_balancing", outlier_round),
        ("CircuitBreaker admit + release", breaker_round),
        ("RetryBudget record + try_withdraw", budget_round),
        ("RetryConditions.should_retry", lambda: conditions.should_retry(503)),
        ("Backoff.delay", lambda: backoff.delay(2)),
        ("Deadline.start (grpc-timeout)", lambda: Deadline.start(1.0, 15.0,
                                                                 {"grpc-timeout": "2S"})),
        ("grpc-timeout format + parse", lambda: parse_grpc_timeout(format_grpc_timeout(1.5))),
    ]
    print(f"python {sys.version.split()[0]} on {platform.machine()} {platform.system()}, "
          f"{len(keys)} endpoints, N={n}")
    print(f"  {'RingHash build':48s} {ring_build * 1e3:9.2f} ms ({len(ring)} points)")
    print(f"  {'Maglev build (65537 entries)':48s} {maglev_build * 1e3:9.2f} ms")
    for name, fn in cases:
        print(f"  {name:48s} {per_call_ns(fn, n) / 1000:9.3f} µs")


if __name__ == "__main__":
    main()
