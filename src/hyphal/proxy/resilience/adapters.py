"""Adapters from the compiled runtime tables to the resilience cores, and one picker facade.

The data plane holds `ClusterSpec`/`RetryPolicy` values from `hyphal.proxy.runtime.tables`;
these functions turn them into the cores' configs at config time (never per request), and
`EndpointPicker` gives every load-balancing policy the same per-request call:
`pick(now, exclude, hash_key)`. Fields the tables do not carry yet (max_ejection_time,
panic threshold, ...) are read with `getattr` and fall back to the cores' defaults, so the
tables can grow them without a change here.
"""

from __future__ import annotations

import random
from collections.abc import Container, Mapping, Sequence

from hyphal.proxy.resilience.backoff import BackoffConfig, RetryConditions
from hyphal.proxy.resilience.balancers import LeastRequest, PeakEwma, Random, RoundRobin
from hyphal.proxy.resilience.breaker import BreakerLimits
from hyphal.proxy.resilience.consistent_hash import Maglev, RingHash
from hyphal.proxy.resilience.health import HealthCheckConfig
from hyphal.proxy.resilience.outlier import OutlierConfig
from hyphal.proxy.runtime.tables import (
    CircuitBreaker,
    EndpointSpec,
    HealthCheckSpec,
    OutlierSpec,
    RetryPolicy,
)

_NOTHING: frozenset[str] = frozenset()


def outlier_config(spec: OutlierSpec) -> OutlierConfig:
    """Thresholds of 0 stay "off" (the compiler turns 0% enforcement into 0)."""
    defaults = OutlierConfig()
    base = spec.base_ejection_time_s
    return OutlierConfig(
        consecutive_5xx=spec.consecutive_5xx or None,
        consecutive_gateway_failure=spec.consecutive_gateway_failure or None,
        consecutive_local_origin_failure=getattr(
            spec, "consecutive_local_origin_failure", defaults.consecutive_local_origin_failure),
        split_external_local_origin_errors=getattr(
            spec, "split_external_local_origin_errors", False),
        interval_s=spec.interval_s,
        base_ejection_time_s=base,
        max_ejection_time_s=max(getattr(spec, "max_ejection_time_s",
                                        defaults.max_ejection_time_s), base),
        max_ejection_percent=spec.max_ejection_percent,
        always_eject_one_host=getattr(spec, "always_eject_one_host", False),
        healthy_panic_threshold=getattr(spec, "healthy_panic_threshold",
                                        defaults.healthy_panic_threshold),
    )


def breaker_limits(spec: CircuitBreaker) -> BreakerLimits:
    return BreakerLimits(spec.max_connections, spec.max_pending_requests, spec.max_requests,
                         spec.max_retries)


def retry_conditions(policy: RetryPolicy) -> RetryConditions:
    """Raises ValueError naming an unsupported `retry_on` flag (a NACK-worthy config)."""
    return RetryConditions.from_flags(policy.retry_on, policy.retriable_status_codes)


def backoff_config(policy: RetryPolicy) -> BackoffConfig:
    return BackoffConfig(base_s=policy.base_interval_s,
                         cap_s=max(policy.max_interval_s, policy.base_interval_s))


def health_check_config(spec: HealthCheckSpec) -> HealthCheckConfig:
    return HealthCheckConfig(
        interval_s=spec.interval_s, timeout_s=spec.timeout_s,
        unhealthy_threshold=spec.unhealthy_threshold,
        healthy_threshold=spec.healthy_threshold,
        # A little jitter so that many sidecars do not probe one app in lockstep.
        interval_jitter_percent=getattr(spec, "interval_jitter_percent", 10.0),
        initial_jitter_s=getattr(spec, "initial_jitter_s", spec.interval_s),
    )


Picker = RoundRobin | Random | LeastRequest | PeakEwma | RingHash | Maglev


class EndpointPicker:
    """One cluster's balancer behind one call. Build it when the endpoint set or the policy
    changes (pass the previous picker to keep peak-EWMA estimates); `pick` per request.

    `policy` is an `LbPolicy` value or "peak_ewma". Hash policies without a hash key pick at
    random, as Envoy does. `active` is the data plane's live in-flight count per address."""

    __slots__ = ("_fallback", "_picker", "endpoints", "keys", "policy")

    def __init__(self, policy: str, endpoints: Sequence[EndpointSpec],
                 active: Mapping[str, int], rng: random.Random | None = None,
                 now: float = 0.0, previous: EndpointPicker | None = None,
                 ring_min_size: int = 1024, maglev_table_size: int = 65537) -> None:
        self.policy = str(policy)
        self.endpoints = {e.address: e for e in endpoints}
        keys = tuple(self.endpoints)
        weights = [max(e.weight, 1) for e in self.endpoints.values()]
        self.keys = keys
        rng = rng if rng is not None else random.Random()
        self._fallback = Random(keys, weights, rng)
        picker: Picker
        if self.policy == "round_robin":
            picker = RoundRobin(keys, weights, rng)
        elif self.policy == "least_request":
            picker = LeastRequest(keys, active, weights, rng)
        elif self.policy == "random":
            picker = self._fallback
        elif self.policy == "ring_hash":
            picker = RingHash(keys, weights, min_ring_size=ring_min_size)
        elif self.policy == "maglev":
            picker = Maglev(keys, weights, table_size=maglev_table_size)
        elif self.policy == "peak_ewma":
            old: Picker | None = previous.picker if previous is not None else None
            picker = PeakEwma(keys, active, weights, rng, now=now,
                              previous=old if isinstance(old, PeakEwma) else None)
        else:
            raise ValueError(f"lb_policy {policy!r} is not supported; use round_robin, "
                             "least_request, random, ring_hash, maglev or peak_ewma")
        self._picker: Picker = picker

    @property
    def picker(self) -> Picker:
        """The underlying core (for stats and tests)."""
        return self._picker

    def pick(self, now: float, exclude: Container[str] = _NOTHING,
             hash_key: bytes | None = None) -> EndpointSpec | None:
        picker = self._picker
        key: str | None
        if isinstance(picker, RoundRobin):  # the default policy first: one class to test
            key = picker.pick(exclude)
        elif isinstance(picker, RingHash | Maglev):
            key = (picker.pick(hash_key, exclude) if hash_key is not None
                   else self._fallback.pick(exclude))
        elif isinstance(picker, PeakEwma):
            key = picker.pick(now, exclude)
        else:
            key = picker.pick(exclude)
        return None if key is None else self.endpoints[key]

    def observe(self, address: str, latency_s: float, now: float) -> None:
        """Feed a response latency (used by peak EWMA; a no-op for the others)."""
        if isinstance(self._picker, PeakEwma):
            self._picker.observe(address, latency_s, now)
