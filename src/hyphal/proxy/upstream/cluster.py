"""Cluster runtime state: the resilience cores of one cluster, kept across config swaps.

One `ClusterRuntime` per cluster holds the policy cores of `hyphal.proxy.resilience`, built
once per `ClusterSpec` (never per request): the `EndpointPicker` (round robin, least
request, random, peak EWMA, ring hash, Maglev), the `OutlierDetector` (passive health), the
`CircuitBreaker` counters, the per-cluster `RetryBudget` (rate form: 20% of requests plus
3/s), and the active `HealthChecker` when the cluster asks for one. When a cluster's spec
changes (an EDS update, a new DestinationRule) the `ClusterManager` builds a new runtime that
takes over the previous one's live state: in-flight counts, breaker counters, budget window,
ejections and their multipliers, health states and peak-EWMA latency estimates.

Per request the exchange calls, in order (see `hyphal.proxy.resilience`): `admit()` (breaker
`max_requests` and a budget tick), `pick()` per try, `start()`/`finish()` around each try
(outlier detection, latency for peak EWMA), `admit_retry()` before each retry (budget, then
breaker `max_retries`), `release_retry()` after it and `release()` at the end.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Container, Iterable
from dataclasses import replace
from typing import Final

from hyphal.proxy.resilience.adapters import (
    EndpointPicker,
    backoff_config,
    breaker_limits,
    outlier_config,
    retry_conditions,
)
from hyphal.proxy.resilience.backoff import Backoff, FailureKind, RetryConditions
from hyphal.proxy.resilience.breaker import ADMITTED, CircuitBreaker
from hyphal.proxy.resilience.budget import RetryBudget
from hyphal.proxy.resilience.outlier import OutlierDetector
from hyphal.proxy.runtime.tables import ClusterSpec, EndpointSpec, LbPolicy, RetryPolicy
from hyphal.proxy.upstream.health import ActiveHealth
from hyphal.proxy.upstream.pool import ConnectionPool
from hyphal.telemetry.stats import Stats

log = logging.getLogger(__name__)

_NOTHING: Final[frozenset[str]] = frozenset()
_PURE_SINGLE: Final = frozenset({LbPolicy.ROUND_ROBIN, LbPolicy.LEAST_REQUEST,
                                 LbPolicy.PEAK_EWMA})
OVERFLOW_METRIC: Final = "hyphal_upstream_rq_overflow_total"
EJECTION_METRIC: Final = "hyphal_outlier_ejections_total"


class _Either:
    """`a | b` as a Container without building a set (a request's tried endpoints plus the
    cluster's ejected ones)."""

    __slots__ = ("a", "b")

    def __init__(self, a: Container[str], b: Container[str]) -> None:
        self.a = a
        self.b = b

    def __contains__(self, key: object) -> bool:
        return key in self.a or key in self.b


class ClusterRuntime:
    """The live state of one cluster next to its immutable ClusterSpec."""

    __slots__ = ("_backoffs", "_conditions", "_only", "_out", "_out_from", "_single", "active",
                 "breaker", "budget", "health", "keys", "outlier", "picker", "rng", "spec",
                 "stats")

    picker: EndpointPicker
    breaker: CircuitBreaker
    budget: RetryBudget

    def __init__(self, spec: ClusterSpec, previous: ClusterRuntime | None = None,
                 stats: Stats | None = None, pool: ConnectionPool | None = None,
                 rng: random.Random | None = None) -> None:
        now = time.monotonic()
        self.spec = spec
        self.stats = stats if stats is not None else Stats()
        self.rng = rng if rng is not None else random.Random()
        # Endpoints EDS marks unhealthy never take traffic (Envoy's health_status).
        healthy = tuple(e for e in spec.endpoints if e.healthy) or ()
        self.keys = tuple(e.address for e in healthy)
        self.active: dict[str, int] = previous.active if previous is not None else {}
        old_picker = previous.picker if previous is not None else None
        self.picker = EndpointPicker(_policy_name(spec), healthy, self.active, self.rng, now,
                                     previous=old_picker, ring_min_size=spec.ring_min_size,
                                     maglev_table_size=spec.maglev_table_size)
        # One endpoint under a policy whose pick of it has no side effect (random and the
        # hash policies' random fallback draw from the shared rng): `pick` returns it as is.
        self._single: EndpointSpec | None = (
            healthy[0] if len(healthy) == 1 and spec.lb in _PURE_SINGLE else None)
        limits = breaker_limits(spec.circuit_breaker)
        if previous is not None:
            self.breaker = previous.breaker
            if self.breaker.limits != limits:
                self.breaker.update_limits(limits)
            self.budget = previous.budget
        else:
            self.breaker = CircuitBreaker(limits)
            self.budget = RetryBudget()
        self.outlier: OutlierDetector | None = None
        if spec.outlier is not None:
            config = outlier_config(spec.outlier)
            kept = previous.outlier if previous is not None else None
            if kept is not None:
                kept.config = config
                kept.set_hosts(self.keys)
                self.outlier = kept
            else:
                self.outlier = OutlierDetector(config, self.keys)
        self.health: ActiveHealth | None = None
        kept_health = previous.health if previous is not None else None
        if spec.health_check is not None and pool is not None:
            if kept_health is not None and kept_health.spec == spec.health_check:
                kept_health.update(spec, self.keys)
                self.health = kept_health
            else:
                if kept_health is not None:
                    kept_health.stop()
                self.health = ActiveHealth.start(spec, self.keys, pool)
        elif kept_health is not None:
            kept_health.stop()
        # `_single` when neither outlier detection nor active health checks can exclude it.
        self._only = self._single if self.outlier is None and self.health is None else None
        self._out: Container[str] = _NOTHING
        self._out_from: tuple[object, object] = (None, None)
        self._conditions: dict[RetryPolicy, RetryConditions] = (
            previous._conditions if previous is not None else {})
        self._backoffs: dict[tuple[float, float], Backoff] = (
            previous._backoffs if previous is not None else {})

    # ------------------------------------------------------------- admission

    def admit(self, now: float) -> str | None:
        """A new request (not a retry): None when admitted (call `release()` at its end), else
        the refusal reason for `x-hyphal-reason` (`circuit_open`)."""
        admission = self.breaker.admit_request()
        if admission is not ADMITTED:  # identity, not Admission.__bool__: once per request
            reason = admission.reason.value if admission.reason else "circuit_open"
            self.overflow(reason)
            return reason
        self.budget.record_request(now)
        return None

    def release(self) -> None:
        self.breaker.release_request()

    def admit_retry(self, now: float) -> str | None:
        """None when a retry may start (call `release_retry()` when it ends); else why not:
        `retry_budget_exhausted` (the rate budget) or `retry_overflow` (max_retries)."""
        if not self.budget.try_withdraw(now):
            self.overflow("retry_budget_exhausted")
            return "retry_budget_exhausted"
        admission = self.breaker.admit_retry()
        if not admission:
            self.overflow("retry_overflow")
            return "retry_overflow"
        return None

    def release_retry(self) -> None:
        self.breaker.release_retry()

    def overflow(self, reason: str) -> None:
        self.stats.count_labeled(OVERFLOW_METRIC, (("cluster", self.spec.name),
                                                   ("reason", reason)))

    # ------------------------------------------------------------- balancing

    def _excluded(self, now: float) -> Container[str]:
        """Ejected and actively-unhealthy endpoints, unless the panic threshold says to use
        every endpoint. Cached by the identity of the cores' (immutable) answers."""
        outlier = self.outlier
        health = self.health
        ejected = outlier.excluded(now) if outlier is not None else _NOTHING
        unhealthy = health.unhealthy() if health is not None else _NOTHING
        if not ejected and not unhealthy:
            return _NOTHING
        if self._out_from[0] is ejected and self._out_from[1] is unhealthy:
            return self._out
        keys = self.keys
        if outlier is not None:
            hosts = outlier.hosts_for_balancing(keys, now, unhealthy)
        else:
            hosts = tuple(k for k in keys if k not in unhealthy) or keys  # panic: all
        out = frozenset(keys) - frozenset(hosts) if hosts is not keys else _NOTHING
        self._out = out
        self._out_from = (ejected, unhealthy)
        return out

    def pick(self, exclude: Container[str] = _NOTHING, hash_key: bytes | None = None,
             now: float | None = None) -> EndpointSpec | None:
        """An endpoint for the next try. `exclude` holds the endpoints this request already
        tried: they are avoided while another usable endpoint exists."""
        only = self._only
        if only is not None and not exclude:
            return only  # one endpoint, nothing can exclude it: no balancer, no clock
        if now is None:
            now = time.monotonic()
        out = self._excluded(now)
        if not exclude:
            if not out and self._single is not None:
                return self._single  # the only endpoint, nothing excluded: no balancer call
            return self.picker.pick(now, out, hash_key)
        picker = self.picker
        chosen = picker.pick(now, _Either(exclude, out) if out else exclude, hash_key)
        if chosen is None:
            chosen = picker.pick(now, out, hash_key)  # every usable one tried: reuse one
        return chosen

    # ------------------------------------------------------------- tries

    def start(self, address: str) -> None:
        active = self.active
        active[address] = active.get(address, 0) + 1

    def finish(self, address: str, outcome: int | FailureKind | None,
               latency_s: float | None = None, now: float | None = None) -> None:
        """A try ended: its HTTP status, a FailureKind, or None (cancelled: not an outcome)."""
        active = self.active
        count = active.get(address, 0)
        if count > 1:
            active[address] = count - 1
        elif count == 1:
            del active[address]
        if outcome is None:
            return
        if now is None:
            now = time.monotonic()
        if latency_s is not None and self.spec.lb is LbPolicy.PEAK_EWMA:
            self.picker.observe(address, latency_s, now)
        if self.outlier is not None:
            self.record(address, outcome, now)

    def record(self, address: str, outcome: int | FailureKind, now: float) -> None:
        outlier = self.outlier
        if outlier is None:
            return
        ejection = outlier.record(address, outcome, now)
        if ejection is not None:
            self.stats.count(EJECTION_METRIC, self.spec.name)
            log.warning("cluster %s: ejected %s (%s, %d time(s)) for %.1fs", self.spec.name,
                        ejection.key, ejection.reason.value, ejection.times_ejected,
                        ejection.until - now)

    def connect_failed(self, address: str) -> None:
        """A connect failure outside a try (the TCP proxy)."""
        self.record(address, FailureKind.CONNECT_FAILURE, time.monotonic())

    # ------------------------------------------------------------- retry policy

    def conditions(self, policy: RetryPolicy) -> RetryConditions:
        """The compiled `retry_on` of a route's policy (compiled once, then cached)."""
        found = self._conditions.get(policy)
        if found is None:
            if len(self._conditions) > 256:
                self._conditions.clear()
            found = self._conditions[policy] = retry_conditions(_istio_flags(policy))
        return found

    def backoff(self, policy: RetryPolicy | None) -> Backoff:
        key = (policy.base_interval_s, policy.max_interval_s) if policy else (0.025, 0.25)
        found = self._backoffs.get(key)
        if found is None:
            config = backoff_config(policy) if policy is not None else None
            found = self._backoffs[key] = (Backoff(config, self.rng) if config is not None
                                           else Backoff(rng=self.rng))
        return found

    # ------------------------------------------------------------- lifecycle

    def ejected(self, now: float | None = None) -> frozenset[str]:
        """Endpoints ejected right now (diagnostics, tests)."""
        if self.outlier is None:
            return _NOTHING
        return self.outlier.excluded(time.monotonic() if now is None else now)

    def close(self) -> None:
        if self.health is not None:
            self.health.stop()
            self.health = None


def _policy_name(spec: ClusterSpec) -> str:
    return str(spec.lb.value)


def _istio_flags(policy: RetryPolicy) -> RetryPolicy:
    """Istio's `unavailable` on an HTTP/1.1 hop means a 503 (its gRPC status otherwise)."""
    if "unavailable" in policy.retry_on and 503 not in policy.retriable_status_codes:
        on = policy.retry_on | {"retriable-status-codes"}
        return replace(policy, retry_on=frozenset(on),
                       retriable_status_codes=policy.retriable_status_codes | {503})
    return policy


class ClusterManager:
    """Cluster runtimes by name; a runtime is rebuilt (keeping its live state) when its spec
    changes, and closed when its cluster leaves the config."""

    __slots__ = ("_rng", "_runtimes", "mirrors", "pool")

    def __init__(self, pool: ConnectionPool, rng: random.Random | None = None) -> None:
        from hyphal.proxy.mirror import Mirrors  # mirror.py imports this module

        self.pool = pool
        self._rng = rng if rng is not None else random.Random()
        self._runtimes: dict[str, ClusterRuntime] = {}
        self.mirrors = Mirrors(pool)

    def runtime(self, spec: ClusterSpec) -> ClusterRuntime:
        current = self._runtimes.get(spec.name)
        if current is not None:
            if current.spec is spec:
                return current
            if current.spec == spec:
                current.spec = spec  # identical content: the next lookup is an `is`
                return current
        runtime = ClusterRuntime(spec, current, self.pool.stats, self.pool, self._rng)
        self._runtimes[spec.name] = runtime
        return runtime

    def get(self, name: str) -> ClusterRuntime | None:
        return self._runtimes.get(name)

    def retain(self, names: Iterable[str]) -> None:
        keep = set(names)
        for name in list(self._runtimes):
            if name not in keep:
                self._runtimes.pop(name).close()
