"""Cluster runtime state: balancer, in-flight counts, circuit breaker and outlier ejection."""

from __future__ import annotations

import time

from hyphal.proxy.runtime.tables import ClusterSpec, EndpointSpec
from hyphal.proxy.upstream.balancer import Balancer
from hyphal.proxy.upstream.pool import ConnectionPool


class ClusterRuntime:
    """Mutable per-cluster counters next to an immutable ClusterSpec."""

    __slots__ = ("spec", "balancer", "active", "active_requests", "active_retries",
                 "_failures", "_ejected_until")

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.balancer = Balancer(spec.lb, spec.endpoints)
        self.active: dict[str, int] = {}
        self.active_requests = 0
        self.active_retries = 0
        self._failures: dict[str, int] = {}
        self._ejected_until: dict[str, float] = {}

    def pick(self, exclude: frozenset[str], hash_key: bytes | None) -> EndpointSpec | None:
        if not self._ejected_until:
            return self.balancer.pick(self.active, exclude, hash_key)
        chosen = self.balancer.pick(self.active, exclude, hash_key, self._not_ejected)
        # Panic mode (as Envoy): when ejection leaves nothing, use every healthy endpoint.
        return chosen or self.balancer.pick(self.active, exclude, hash_key)

    def _not_ejected(self, endpoint: EndpointSpec) -> bool:
        until = self._ejected_until.get(endpoint.address)
        if until is None:
            return True
        if time.monotonic() >= until:
            del self._ejected_until[endpoint.address]
            return True
        return False

    def circuit_open(self) -> bool:
        return self.active_requests >= self.spec.circuit_breaker.max_requests

    def retry_allowed(self) -> bool:
        return self.active_retries < self.spec.circuit_breaker.max_retries

    def start(self, address: str) -> None:
        self.active_requests += 1
        self.active[address] = self.active.get(address, 0) + 1

    def finish(self, address: str, status: int | None) -> None:
        """`status` None = connect failure / reset (a gateway failure for outlier detection)."""
        self.active_requests -= 1
        self.active[address] = self.active.get(address, 1) - 1
        outlier = self.spec.outlier
        if outlier is None:
            return
        if status is None or status >= 500:
            count = self._failures.get(address, 0) + 1
            self._failures[address] = count
            limit = outlier.consecutive_gateway_failure if status is None else outlier.consecutive_5xx
            if count >= limit:
                self._eject(address)
        elif address in self._failures:
            del self._failures[address]

    def connect_failed(self, address: str) -> None:
        outlier = self.spec.outlier
        if outlier is None:
            return
        count = self._failures.get(address, 0) + 1
        self._failures[address] = count
        if count >= outlier.consecutive_gateway_failure:
            self._eject(address)

    def _eject(self, address: str) -> None:
        outlier = self.spec.outlier
        assert outlier is not None
        total = max(len(self.spec.endpoints), 1)
        limit = max(1, outlier.max_ejection_percent * total // 100)
        now = time.monotonic()
        if sum(1 for until in self._ejected_until.values() if until > now) >= limit:
            return
        self._ejected_until[address] = time.monotonic() + outlier.base_ejection_time_s
        self._failures[address] = 0


class ClusterManager:
    """Cluster runtimes by name; a runtime is rebuilt when its spec changes."""

    __slots__ = ("pool", "_runtimes")

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._runtimes: dict[str, ClusterRuntime] = {}

    def runtime(self, spec: ClusterSpec) -> ClusterRuntime:
        current = self._runtimes.get(spec.name)
        if current is not None and (current.spec is spec or current.spec == spec):
            return current
        runtime = ClusterRuntime(spec)
        if current is not None:
            # Keep in-flight accounting continuous across an EDS update.
            runtime.active = current.active
            runtime.active_requests = current.active_requests
        self._runtimes[spec.name] = runtime
        return runtime

    def retain(self, names: set[str]) -> None:
        for name in list(self._runtimes):
            if name not in names:
                del self._runtimes[name]
