"""Outlier detection per cluster (Envoy's consecutive-error detectors) and the panic threshold.

Theory of operation. Every try's outcome is `record`ed against its endpoint: an HTTP status,
or a `FailureKind` when no response came back. Three consecutive-error counters run per
endpoint, as in Envoy's `outlier_detection`:

* `consecutive_5xx`: 5xx responses; any non-5xx response resets it.
* `consecutive_gateway_failure`: 502/503/504 (and, unsplit, every local-origin failure); any
  non-gateway response resets it.
* `consecutive_local_origin_failure`: only with `split_external_local_origin_errors`: connect
  failures, resets, refused streams and per-try timeouts count here instead of as 5xx; any
  response from the upstream resets it.

Unsplit (Envoy's default), a local-origin failure counts as the status Envoy would answer
with: 504 for a timeout, 503 for the others. When a counter reaches its threshold the
endpoint is ejected (the counter restarts either way) for `base_ejection_time *
times_ejected`, capped by `max_ejection_time`; every sweep (`interval`) that finds an endpoint
not ejected lowers its multiplier by one, so a flapping endpoint stays out longer and a
recovered one is forgiven. An ejection is refused (`ejections_overflow`) when it would take
the ejected share above `max_ejection_percent` (the candidate counts, as in current Envoy:
`100 * (active + 1) / hosts <= max`), unless `always_eject_one_host` allows the first. Mind
that with the default 10% a cluster of fewer than 10 endpoints never ejects without it.

An ejection ends once its time has passed (`is_ejected` compares with `now`; `sweep` does the
bookkeeping). `hosts_for_balancing` applies `healthy_panic_threshold`: when the healthy share
falls below it, every endpoint is balanced over (Envoy's panic mode; 0 disables it).

Not implemented: the success-rate and failure-percentage detectors, enforcing_* percentages
(every detection is enforced) and ejection jitter.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from hyphal.proxy.resilience.backoff import FailureKind


class EjectionReason(StrEnum):
    CONSECUTIVE_5XX = "consecutive_5xx"
    CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
    CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """Envoy's field names; a threshold of None (or 0) disables that detector. Defaults:
    Envoy's, except that the gateway detector is off (Envoy's default enforcement is 0%)."""

    consecutive_5xx: int | None = 5
    consecutive_gateway_failure: int | None = None
    consecutive_local_origin_failure: int | None = 5
    split_external_local_origin_errors: bool = False
    interval_s: float = 10.0
    base_ejection_time_s: float = 30.0
    max_ejection_time_s: float = 300.0
    max_ejection_percent: int = 10
    always_eject_one_host: bool = False
    healthy_panic_threshold: float = 50.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("outlier_detection.max_ejection_percent must be in [0, 100]")
        if not 0.0 <= self.healthy_panic_threshold <= 100.0:
            raise ValueError("healthy_panic_threshold must be a percentage in [0, 100]")
        if self.base_ejection_time_s <= 0 or self.interval_s <= 0:
            raise ValueError("outlier_detection interval and base_ejection_time must be > 0")
        if self.max_ejection_time_s < self.base_ejection_time_s:
            raise ValueError(
                f"outlier_detection.max_ejection_time ({self.max_ejection_time_s}s) must be >= "
                f"base_ejection_time ({self.base_ejection_time_s}s)"
            )


@dataclass(frozen=True, slots=True)
class Ejection:
    """An ejection that just happened (log it: endpoint, reason, until)."""

    key: str
    reason: EjectionReason
    until: float
    times_ejected: int


@dataclass(frozen=True, slots=True)
class OutlierStats:
    ejections_total: int
    ejections_active: int
    ejections_overflow: int
    ejections_by_reason: tuple[tuple[str, int], ...]


class _Monitor:
    __slots__ = ("c5xx", "cgw", "clocal", "multiplier", "until")

    def __init__(self) -> None:
        self.c5xx = 0
        self.cgw = 0
        self.clocal = 0
        self.multiplier = 0
        self.until: float | None = None


_LOCAL_STATUS = {
    FailureKind.TIMEOUT: 504,
    FailureKind.CONNECT_FAILURE: 503,
    FailureKind.RESET: 503,
    FailureKind.REFUSED_STREAM: 503,
}


class OutlierDetector:
    """One per cluster. `hosts` are endpoint keys (e.g. "10.0.0.1:8080")."""

    __slots__ = (
        "_by_reason",
        "_ejected",
        "_excluded",
        "_monitors",
        "_next_expiry",
        "_overflow",
        "_total",
        "config",
    )

    def __init__(self, config: OutlierConfig = OutlierConfig(),
                 hosts: Iterable[str] = ()) -> None:
        self.config = config
        self._monitors: dict[str, _Monitor] = {}
        self._ejected: dict[str, float] = {}
        self._excluded: frozenset[str] = frozenset()
        self._next_expiry = float("inf")
        self._total = 0
        self._overflow = 0
        self._by_reason = {r.value: 0 for r in EjectionReason}
        self.set_hosts(hosts)

    def set_hosts(self, hosts: Iterable[str]) -> None:
        """The cluster's endpoint set changed (EDS): keep the state of the ones that stay."""
        keys = set(hosts)
        self._monitors = {k: self._monitors.get(k) or _Monitor() for k in keys}
        self._ejected = {k: t for k, t in self._ejected.items() if k in keys}
        self._refresh()

    # ------------------------------------------------------------- recording

    def record(self, key: str, outcome: int | FailureKind | str,
               now: float) -> Ejection | None:
        """Feed one try's outcome: an HTTP status (int) or a failure kind."""
        monitor = self._monitors.get(key)
        if monitor is None:
            return None  # an endpoint that left the set; nothing to track
        config = self.config
        if isinstance(outcome, int):
            status = outcome
            monitor.clocal = 0
        else:
            kind = FailureKind(outcome)
            if config.split_external_local_origin_errors:
                monitor.clocal += 1
                threshold = config.consecutive_local_origin_failure
                if threshold and monitor.clocal >= threshold:
                    monitor.clocal = 0
                    return self._eject(key, monitor, EjectionReason
                                       .CONSECUTIVE_LOCAL_ORIGIN_FAILURE, now)
                return None
            status = _LOCAL_STATUS[kind]
        if status < 500:
            monitor.c5xx = 0
            monitor.cgw = 0
            return None
        ejection: Ejection | None = None
        if status in (502, 503, 504):
            monitor.cgw += 1
            threshold = config.consecutive_gateway_failure
            if threshold and monitor.cgw >= threshold:
                monitor.cgw = 0
                ejection = self._eject(key, monitor,
                                       EjectionReason.CONSECUTIVE_GATEWAY_FAILURE, now)
        else:
            monitor.cgw = 0
        monitor.c5xx += 1
        threshold = config.consecutive_5xx
        if threshold and monitor.c5xx >= threshold:
            monitor.c5xx = 0
            if ejection is None:
                ejection = self._eject(key, monitor, EjectionReason.CONSECUTIVE_5XX, now)
        return ejection

    def _eject(self, key: str, monitor: _Monitor, reason: EjectionReason,
               now: float) -> Ejection | None:
        if monitor.until is not None and monitor.until > now:
            return None  # already out
        self._expire(now)
        config = self.config
        active = len(self._ejected)
        hosts = len(self._monitors)
        allowed = 100 * (active + 1) <= config.max_ejection_percent * hosts
        if not allowed and not (config.always_eject_one_host and active == 0):
            self._overflow += 1
            return None
        monitor.multiplier += 1
        duration = min(config.base_ejection_time_s * monitor.multiplier,
                       max(config.max_ejection_time_s, config.base_ejection_time_s))
        until = now + duration
        monitor.until = until
        self._ejected[key] = until
        self._total += 1
        self._by_reason[reason.value] += 1
        self._refresh()
        return Ejection(key, reason, until, monitor.multiplier)

    # ------------------------------------------------------------- time

    def _expire(self, now: float) -> None:
        if now < self._next_expiry:
            return
        for key in [k for k, until in self._ejected.items() if until <= now]:
            del self._ejected[key]
            monitor = self._monitors.get(key)
            if monitor is not None:
                monitor.until = None
        self._refresh()

    def _refresh(self) -> None:
        self._excluded = frozenset(self._ejected)
        self._next_expiry = min(self._ejected.values(), default=float("inf"))

    def sweep(self, now: float) -> tuple[str, ...]:
        """Run every `interval_s`: un-eject endpoints whose time has passed, and forgive one
        ejection from each endpoint that spent the interval in service. Returns the keys
        un-ejected now."""
        returned = tuple(k for k, until in self._ejected.items() if until <= now)
        self._expire(now)
        for key, monitor in self._monitors.items():
            if key not in self._ejected and monitor.multiplier > 0 and key not in returned:
                monitor.multiplier -= 1
        return returned

    # ------------------------------------------------------------- queries

    def is_ejected(self, key: str, now: float) -> bool:
        until = self._ejected.get(key)
        return until is not None and until > now

    def excluded(self, now: float) -> frozenset[str]:
        """Endpoints to keep out of balancing right now (ignores the panic threshold; see
        `hosts_for_balancing`). O(1) unless an ejection just expired."""
        if now >= self._next_expiry:
            self._expire(now)
        return self._excluded

    def hosts_for_balancing(self, all_keys: tuple[str, ...], now: float,
                            unhealthy: Collection[str] = ()) -> tuple[str, ...]:
        """The endpoints to balance over: all but the ejected and `unhealthy` (active health
        checks) ones, or all of them in panic mode (healthy share below the threshold).
        Returns `all_keys` itself when nothing is excluded."""
        excluded = self.excluded(now)
        if not excluded and not unhealthy:
            return all_keys
        healthy = tuple(k for k in all_keys if k not in excluded and k not in unhealthy)
        if len(healthy) == len(all_keys):
            return all_keys
        if 100.0 * len(healthy) < self.config.healthy_panic_threshold * len(all_keys):
            return all_keys
        return healthy

    def in_panic(self, all_keys: tuple[str, ...], now: float,
                 unhealthy: Collection[str] = ()) -> bool:
        """True when the healthy share is below `healthy_panic_threshold` (stats, logs)."""
        excluded = self.excluded(now)
        if not excluded and not unhealthy:
            return False
        healthy = sum(1 for k in all_keys if k not in excluded and k not in unhealthy)
        return (healthy < len(all_keys)
                and 100.0 * healthy < self.config.healthy_panic_threshold * len(all_keys))

    def times_ejected(self, key: str) -> int:
        """The current ejection multiplier of `key` (0 = forgiven)."""
        monitor = self._monitors.get(key)
        return monitor.multiplier if monitor is not None else 0

    def stats(self, now: float) -> OutlierStats:
        self.excluded(now)
        return OutlierStats(self._total, len(self._ejected), self._overflow,
                            tuple(sorted(self._by_reason.items())))
