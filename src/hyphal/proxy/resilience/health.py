"""Active health checking, the pure part: a per-endpoint state machine and its schedule.

Theory of operation. Each endpoint is HEALTHY or UNHEALTHY and counts consecutive passes and
failures. Probe outcomes (`CheckResult`) drive the transition table `_TRANSITIONS`, which
follows Envoy's health checker:

* PASS: an UNHEALTHY endpoint becomes HEALTHY after `healthy_threshold` consecutive passes,
  or after a single one if it has never been checked (Envoy: "during startup, only a single
  successful health check is required").
* NETWORK_FAIL (connect error, reset, timeout): a HEALTHY endpoint becomes UNHEALTHY after
  `unhealthy_threshold` consecutive failures.
* STATUS_FAIL (an HTTP answer outside 2xx): UNHEALTHY at once, ignoring the threshold (Envoy
  does the same for a status outside `expected_statuses`).

New endpoints start HEALTHY (`start_healthy=True`, hyphal's default: EDS already says they
are up, so an added replica takes traffic at once) or UNHEALTHY until their first pass
(Envoy's behaviour; `start_healthy=False`).

The schedule is a heap of due times: `due(now)` hands out the endpoints to probe now, and
`record(key, result, now)` schedules the next probe after `interval_s` (HEALTHY) or
`unhealthy_interval_s`, using the `*_edge_interval_s` right after a transition, plus jitter
(`interval_jitter_s` absolute and `interval_jitter_percent` of the interval). First probes
are spread over `initial_jitter_s` so a big EDS update does not probe everything at once.
The I/O side lives in `health_probe`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum


class HealthState(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class CheckResult(StrEnum):
    PASS = "pass"
    NETWORK_FAIL = "network_fail"
    STATUS_FAIL = "status_fail"


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    interval_s: float = 5.0
    timeout_s: float = 1.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1
    unhealthy_interval_s: float | None = None  # default: interval_s
    healthy_edge_interval_s: float | None = None  # default: interval_s
    unhealthy_edge_interval_s: float | None = None  # default: unhealthy_interval_s
    interval_jitter_s: float = 0.0
    interval_jitter_percent: float = 0.0
    initial_jitter_s: float = 0.0
    start_healthy: bool = True

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("health check interval and timeout must be > 0 seconds")
        if self.unhealthy_threshold < 1 or self.healthy_threshold < 1:
            raise ValueError("health check healthy/unhealthy thresholds must be >= 1")
        if self.interval_jitter_s < 0 or self.interval_jitter_percent < 0:
            raise ValueError("health check jitter must be >= 0")

    def base_interval(self, state: HealthState, edge: bool) -> float:
        unhealthy = self.unhealthy_interval_s or self.interval_s
        if state is HealthState.HEALTHY:
            return (self.healthy_edge_interval_s or self.interval_s) if edge else self.interval_s
        return (self.unhealthy_edge_interval_s or unhealthy) if edge else unhealthy


@dataclass(frozen=True, slots=True)
class Transition:
    """An endpoint changed state (log it; update the cluster's unhealthy set)."""

    key: str
    old: HealthState
    new: HealthState
    at: float


class EndpointHealth:
    """Mutable state of one endpoint."""

    __slots__ = (
        "checked",
        "failures",
        "generation",
        "in_flight",
        "next_at",
        "passes",
        "state",
    )

    def __init__(self, state: HealthState) -> None:
        self.state = state
        self.passes = 0
        self.failures = 0
        self.checked = False
        self.next_at = 0.0
        self.generation = 0
        self.in_flight = False


def _after_pass(h: EndpointHealth, c: HealthCheckConfig) -> HealthState:
    if not h.checked or h.passes >= c.healthy_threshold:
        return HealthState.HEALTHY
    return HealthState.UNHEALTHY


def _after_network_fail(h: EndpointHealth, c: HealthCheckConfig) -> HealthState:
    if not h.checked and not c.start_healthy:
        return HealthState.UNHEALTHY
    return HealthState.UNHEALTHY if h.failures >= c.unhealthy_threshold else HealthState.HEALTHY


_Rule = Callable[[EndpointHealth, HealthCheckConfig], HealthState]

# (state, result) -> rule giving the next state; every pair is listed (fail closed).
_TRANSITIONS: dict[tuple[HealthState, CheckResult], _Rule] = {
    (HealthState.HEALTHY, CheckResult.PASS): lambda h, c: HealthState.HEALTHY,
    (HealthState.HEALTHY, CheckResult.NETWORK_FAIL): _after_network_fail,
    (HealthState.HEALTHY, CheckResult.STATUS_FAIL): lambda h, c: HealthState.UNHEALTHY,
    (HealthState.UNHEALTHY, CheckResult.PASS): _after_pass,
    (HealthState.UNHEALTHY, CheckResult.NETWORK_FAIL): lambda h, c: HealthState.UNHEALTHY,
    (HealthState.UNHEALTHY, CheckResult.STATUS_FAIL): lambda h, c: HealthState.UNHEALTHY,
}


class HealthChecker:
    """The endpoints of one cluster, their states and probe schedule."""

    __slots__ = ("_endpoints", "_heap", "_rng", "_unhealthy", "config")

    def __init__(self, config: HealthCheckConfig = HealthCheckConfig(),
                 rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng if rng is not None else random.Random()
        self._endpoints: dict[str, EndpointHealth] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._unhealthy: frozenset[str] = frozenset()

    # ------------------------------------------------------------- endpoint set

    def set_endpoints(self, keys: Iterable[str], now: float) -> None:
        """EDS update: add new endpoints (first probe within `initial_jitter_s`), forget the
        removed ones, keep the state of the rest."""
        wanted = set(keys)
        for key in [k for k in self._endpoints if k not in wanted]:
            del self._endpoints[key]
        for key in wanted:
            if key not in self._endpoints:
                start = HealthState.HEALTHY if self.config.start_healthy else HealthState.UNHEALTHY
                health = EndpointHealth(start)
                self._endpoints[key] = health
                jitter = self.config.initial_jitter_s
                self._schedule(key, health, now + (self._rng.random() * jitter if jitter else 0))
        self._refresh_unhealthy()

    def _schedule(self, key: str, health: EndpointHealth, at: float) -> None:
        health.generation += 1
        health.next_at = at
        heapq.heappush(self._heap, (at, health.generation, key))

    def _refresh_unhealthy(self) -> None:
        self._unhealthy = frozenset(
            k for k, h in self._endpoints.items() if h.state is HealthState.UNHEALTHY)

    # ------------------------------------------------------------- schedule

    def next_due(self) -> float | None:
        """When the next probe is due (None: nothing to probe)."""
        heap = self._heap
        while heap:
            at, generation, key = heap[0]
            health = self._endpoints.get(key)
            if health is not None and health.generation == generation and not health.in_flight:
                return at
            heapq.heappop(heap)
        return None

    def due(self, now: float) -> list[str]:
        """Endpoints to probe now; each is in flight until its result is `record`ed."""
        ready: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, generation, key = heapq.heappop(heap)
            health = self._endpoints.get(key)
            if health is None or health.generation != generation or health.in_flight:
                continue
            health.in_flight = True
            ready.append(key)
        return ready

    def _delay(self, state: HealthState, edge: bool) -> float:
        config = self.config
        base = config.base_interval(state, edge)
        jitter = 0.0
        if config.interval_jitter_s:
            jitter += self._rng.random() * config.interval_jitter_s
        if config.interval_jitter_percent:
            jitter += self._rng.random() * base * config.interval_jitter_percent / 100.0
        return base + jitter

    # ------------------------------------------------------------- results

    def record(self, key: str, result: CheckResult | str, now: float) -> Transition | None:
        """Feed one probe result; schedules the next probe. Unknown keys are ignored."""
        health = self._endpoints.get(key)
        if health is None:
            return None
        outcome = CheckResult(result)
        if outcome is CheckResult.PASS:
            health.passes += 1
            health.failures = 0
        else:
            health.failures += 1
            health.passes = 0
        old = health.state
        new = _TRANSITIONS[(old, outcome)](health, self.config)
        health.checked = True
        health.in_flight = False
        health.state = new
        edge = new is not old
        if edge:
            health.passes = 0
            health.failures = 0
            self._refresh_unhealthy()
        self._schedule(key, health, now + self._delay(new, edge))
        return Transition(key, old, new, now) if edge else None

    # ------------------------------------------------------------- queries

    def state(self, key: str) -> HealthState | None:
        health = self._endpoints.get(key)
        return health.state if health is not None else None

    def is_healthy(self, key: str) -> bool:
        return key not in self._unhealthy and key in self._endpoints

    def unhealthy(self) -> frozenset[str]:
        """The endpoints active checks hold out of balancing (pass to the outlier detector's
        `hosts_for_balancing(..., unhealthy=...)` or straight to a balancer's `exclude`)."""
        return self._unhealthy
