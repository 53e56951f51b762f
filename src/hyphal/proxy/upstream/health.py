"""Active health checks of one cluster: the `HealthChecker` core driven by real probes.

A DestinationRule's `trafficPolicy.healthCheck` (hyphal's extension) becomes a cluster
`health_checks[0]`: an HTTP GET of `path` expecting 2xx, or a plain TCP connect. Probes go
the way requests go: over mTLS with the sidecar's own certificate when the cluster is a mesh
destination (so an HTTP probe crosses the destination's sidecar and reaches its app), with
the peer's SPIFFE id checked like any upstream connection. Endpoints start healthy (EDS says
they are up); the ones that fail their checks are held out of balancing until they pass again.
Without a health check, outlier detection is the passive health signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import cast

from hyphal.proxy.resilience.adapters import health_check_config
from hyphal.proxy.resilience.health import CheckResult, HealthChecker, Transition
from hyphal.proxy.resilience.health_probe import HealthProber, split_key
from hyphal.proxy.runtime.tables import ClusterSpec, EndpointSpec, HealthCheckSpec
from hyphal.proxy.upstream.pool import ConnectFailure, ConnectionPool, open_endpoint

log = logging.getLogger(__name__)


class _ProbeProtocol(asyncio.Protocol):
    """Sends one GET, resolves `status` with the status code of the first response line."""

    def __init__(self, request: bytes | None) -> None:
        self.request = request
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The request waits for `open_endpoint`'s peer identity check (see `probe`).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n" in self.buffer and not self.status.done():
            parts = self.buffer.split(b"\r\n", 1)[0].split(None, 2)
            ok = len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit()
            self.status.set_result(int(parts[1]) if ok else 0)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_result(0)


async def probe(spec: ClusterSpec, check: HealthCheckSpec, pool: ConnectionPool, host: str,
                port: int, timeout_s: float) -> CheckResult:
    """One probe of `host:port` as a member of `spec` (mTLS when the cluster says so)."""
    request = None
    if not check.tcp:
        authority = spec.service or f"{host}:{port}"
        request = (f"GET {check.path} HTTP/1.1\r\nHost: {authority}\r\n"
                   "User-Agent: hyphal-health-check\r\nConnection: close\r\n\r\n").encode()
    endpoint = EndpointSpec(host, port)
    transport: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(timeout_s):
            transport, proto, _peer = await open_endpoint(
                lambda: _ProbeProtocol(request), endpoint, spec, pool.tls, timeout_s)
            if request is None:
                return CheckResult.PASS
            transport.write(request)  # only now: the peer's SPIFFE id has been checked
            status = await proto.status
    except (TimeoutError, ConnectFailure, OSError):
        return CheckResult.NETWORK_FAIL
    finally:
        if transport is not None:
            transport.abort()
    if status == 0:
        return CheckResult.NETWORK_FAIL
    return CheckResult.PASS if 200 <= status < 300 else CheckResult.STATUS_FAIL


class ActiveHealth:
    """The health checker and prober task of one cluster."""

    __slots__ = ("checker", "cluster", "pool", "prober", "spec", "task")

    def __init__(self, cluster: ClusterSpec, pool: ConnectionPool) -> None:
        assert cluster.health_check is not None
        self.cluster = cluster
        self.spec: HealthCheckSpec = cluster.health_check
        self.pool = pool
        config = health_check_config(self.spec)
        self.checker = HealthChecker(config, random.Random())
        self.prober = HealthProber(self.checker, self._probe, self._transition)
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, cluster: ClusterSpec, keys: tuple[str, ...],
              pool: ConnectionPool) -> ActiveHealth:
        """Needs a running event loop (the data plane's)."""
        health = cls(cluster, pool)
        loop = asyncio.get_running_loop()
        health.checker.set_endpoints(keys, time.monotonic())
        health.task = loop.create_task(health.prober.run())
        return health

    async def _probe(self, host: str, port: int, timeout_s: float) -> CheckResult:
        return await probe(self.cluster, self.spec, self.pool, host, port, timeout_s)

    def _transition(self, t: Transition) -> None:
        log.warning("cluster %s: %s is now %s (active health check)", self.cluster.name, t.key,
                    t.new.value)
        self.pool.stats.count("hyphal_health_check_transitions_total", self.cluster.name)

    def update(self, cluster: ClusterSpec, keys: tuple[str, ...]) -> None:
        """The endpoint set changed (same check): keep the states of the endpoints that stay."""
        self.cluster = cluster
        self.checker.set_endpoints(keys, time.monotonic())
        self.prober.wake()

    def unhealthy(self) -> frozenset[str]:
        return self.checker.unhealthy()

    def stop(self) -> None:
        self.prober.stop()
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(RuntimeError):
                task.add_done_callback(_quiet)


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


__all__ = ["ActiveHealth", "probe", "split_key"]
