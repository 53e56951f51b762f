"""Active health checks on real loopback sockets: HTTP path and TCP connect probes."""

from __future__ import annotations

import asyncio
import time

from hyphal.proxy.resilience.health import CheckResult
from hyphal.proxy.runtime.tables import ClusterSpec, EndpointSpec, HealthCheckSpec
from hyphal.proxy.upstream.cluster import ClusterRuntime
from hyphal.proxy.upstream.health import probe
from hyphal.proxy.upstream.pool import ConnectionPool
from hyphal.telemetry.stats import Stats


async def _server(status: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def test_probe_results() -> None:
    good, bad = await _server(200), await _server(500)
    pool = ConnectionPool(None, Stats())
    http = HealthCheckSpec(path="/healthz", timeout_s=1.0)
    spec = ClusterSpec("c", ())
    try:
        assert await probe(spec, http, pool, "127.0.0.1", _port(good), 1.0) is CheckResult.PASS
        assert (await probe(spec, http, pool, "127.0.0.1", _port(bad), 1.0)
                is CheckResult.STATUS_FAIL)
        tcp = HealthCheckSpec(tcp=True)
        assert await probe(spec, tcp, pool, "127.0.0.1", _port(bad), 1.0) is CheckResult.PASS
        closed = _port(await _server(200))
        assert await probe(spec, tcp, pool, "127.0.0.1", 1, 0.5) is CheckResult.NETWORK_FAIL
        assert closed > 0
    finally:
        good.close()
        bad.close()


async def test_failing_endpoint_is_held_out_of_balancing() -> None:
    good, bad = await _server(200), await _server(503)
    pool = ConnectionPool(None, Stats())
    eps = (EndpointSpec("127.0.0.1", _port(good)), EndpointSpec("127.0.0.1", _port(bad)))
    check = HealthCheckSpec(path="/healthz", interval_s=0.05, timeout_s=0.5)
    rt = ClusterRuntime(ClusterSpec("c", eps, health_check=check), pool=pool)
    try:
        assert rt.health is not None
        deadline = time.monotonic() + 5
        while eps[1].address not in rt.health.unhealthy():
            assert time.monotonic() < deadline, "the 503 endpoint never became unhealthy"
            await asyncio.sleep(0.02)
        assert {rt.pick().address for _ in range(20)} == {eps[0].address}  # type: ignore[union-attr]
    finally:
        rt.close()
        good.close()
        bad.close()
