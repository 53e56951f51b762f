"""Circuit breaker counters per cluster: Envoy's four thresholds with admission reasons.

Envoy's circuit breakers are not open/closed state machines but resource counters: a new
connection, pending request, request or retry is admitted while its counter is below its
threshold, and every admitted unit is released exactly once. A refusal carries the reason the
data plane puts in its response header and access log:

| counter | threshold | refusal reason | Envoy stat |
| --- | --- | --- | --- |
| requests in flight | max_requests | `circuit_open` | upstream_rq_pending_overflow* |
| requests waiting for a connection | max_pending_requests | `pending_overflow` | upstream_rq_pending_overflow |
| connections | max_connections | `connection_overflow` (queue the request instead) | upstream_cx_overflow |
| retries in flight | max_retries | `retry_overflow` (do not retry; answer with the last try) | upstream_rq_retry_overflow |

(*Envoy counts max_requests refusals in `upstream_rq_pending_overflow` too; we keep them apart.)

Releases never take a counter below zero: a double release is counted in `stats.underflows`
so the bug is visible instead of silently widening the breaker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Refusal(StrEnum):
    CIRCUIT_OPEN = "circuit_open"
    PENDING_OVERFLOW = "pending_overflow"
    CONNECTION_OVERFLOW = "connection_overflow"
    RETRY_OVERFLOW = "retry_overflow"


@dataclass(frozen=True, slots=True)
class Admission:
    """An admission decision; `reason` and `limit` are None when admitted."""

    admitted: bool
    reason: Refusal | None = None
    limit: str | None = None
    threshold: int | None = None

    def __bool__(self) -> bool:
        return self.admitted


ADMITTED = Admission(True)


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    """Envoy's default thresholds (`circuit_breakers.thresholds[0]`)."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"circuit_breakers.thresholds.{name} must be >= 0")


@dataclass(frozen=True, slots=True)
class BreakerStats:
    connections: int
    pending: int
    requests: int
    retries: int
    overflows: Mapping[str, int]
    underflows: int


class CircuitBreaker:
    """Mutable counters for one cluster; swap `limits` on a config change, keep the counts."""

    __slots__ = (
        "_overflows",
        "_refusals",
        "connections",
        "limits",
        "pending",
        "requests",
        "retries",
        "underflows",
    )

    def __init__(self, limits: BreakerLimits = BreakerLimits()) -> None:
        self.limits = limits
        self.connections = 0
        self.pending = 0
        self.requests = 0
        self.retries = 0
        self._overflows: dict[str, int] = {r.value: 0 for r in Refusal}
        self.underflows = 0
        self._refusals = self._build_refusals(limits)

    @staticmethod
    def _build_refusals(limits: BreakerLimits) -> dict[Refusal, Admission]:
        return {
            Refusal.CIRCUIT_OPEN: Admission(False, Refusal.CIRCUIT_OPEN, "max_requests",
                                            limits.max_requests),
            Refusal.PENDING_OVERFLOW: Admission(False, Refusal.PENDING_OVERFLOW,
                                                "max_pending_requests",
                                                limits.max_pending_requests),
            Refusal.CONNECTION_OVERFLOW: Admission(False, Refusal.CONNECTION_OVERFLOW,
                                                   "max_connections", limits.max_connections),
            Refusal.RETRY_OVERFLOW: Admission(False, Refusal.RETRY_OVERFLOW, "max_retries",
                                              limits.max_retries),
        }

    def update_limits(self, limits: BreakerLimits) -> None:
        self.limits = limits
        self._refusals = self._build_refusals(limits)

    def _refuse(self, reason: Refusal) -> Admission:
        self._overflows[reason.value] += 1
        return self._refusals[reason]

    # -- admissions: each admitted unit must be released once

    def admit_request(self) -> Admission:
        if self.requests >= self.limits.max_requests:
            return self._refuse(Refusal.CIRCUIT_OPEN)
        self.requests += 1
        return ADMITTED

    def admit_pending(self) -> Admission:
        """A request that must wait for a connection (the pool is at max_connections)."""
        if self.pending >= self.limits.max_pending_requests:
            return self._refuse(Refusal.PENDING_OVERFLOW)
        self.pending += 1
        return ADMITTED

    def admit_connection(self) -> Admission:
        if self.connections >= self.limits.max_connections:
            return self._refuse(Refusal.CONNECTION_OVERFLOW)
        self.connections += 1
        return ADMITTED

    def admit_retry(self) -> Admission:
        if self.retries >= self.limits.max_retries:
            return self._refuse(Refusal.RETRY_OVERFLOW)
        self.retries += 1
        return ADMITTED

    # -- releases: never negative

    def release_request(self) -> None:
        if self.requests > 0:
            self.requests -= 1
        else:
            self.underflows += 1

    def release_pending(self) -> None:
        if self.pending > 0:
            self.pending -= 1
        else:
            self.underflows += 1

    def release_connection(self) -> None:
        if self.connections > 0:
            self.connections -= 1
        else:
            self.underflows += 1

    def release_retry(self) -> None:
        if self.retries > 0:
            self.retries -= 1
        else:
            self.underflows += 1

    def stats(self) -> BreakerStats:
        return BreakerStats(self.connections, self.pending, self.requests, self.retries,
                            MappingProxyType(dict(self._overflows)), self.underflows)
