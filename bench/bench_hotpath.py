"""In-memory benchmark of the sidecar's HTTP/1.1 hot path (not a test; prints µs per request).

Drives the real HttpDownstream / Exchange / UpstreamConnection objects with in-memory
transports (no sockets, no TLS), so what it measures is the Python cost of one request
through one sidecar: outbound (plaintext in, as sidecar A of the bench chain) and inbound
(peer identity, RBAC, XFCC, as sidecar B, with the headers sidecar A adds), with stats and access log (to /dev/null) on.

Usage: python bench/bench_hotpath.py [--requests 20000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("HYPHAL_SRC", str(ROOT / "src")))  # another tree to compare

from hyphal.proxy.dataplane import DataPlane  # noqa: E402
from hyphal.proxy.http.server import HttpDownstream  # noqa: E402
from hyphal.proxy.runtime.holder import ConfigHolder  # noqa: E402
from hyphal.proxy.runtime.tables import (  # noqa: E402
    AnyRule,
    ClusterAction,
    ClusterSpec,
    DownstreamTls,
    EndpointSpec,
    ListenerKind,
    ListenerSpec,
    OrRule,
    PrincipalRule,
    ProxyConfig,
    RbacEngine,
    RbacPolicy,
    Route,
    RouteMatch,
    RouteTable,
    StringKind,
    StringMatch,
    VirtualHost,
)
from hyphal.proxy.upstream.pool import UpstreamConnection, pool_key  # noqa: E402
from hyphal.telemetry.accesslog import AccessLog  # noqa: E402
from hyphal.telemetry.stats import Stats  # noqa: E402

TD = "spiffe://cluster.local/ns/shop/sa/"
REQUEST = (b"GET /products/42 HTTP/1.1\r\nHost: product:8080\r\nUser-Agent: bench/1.0\r\n"
           b"Accept: */*\r\n\r\n")
# What sidecar B gets from sidecar A: A's route timeout goes on as the remaining time.
INBOUND_REQUEST = REQUEST[:-2] + b"x-request-id: 5b1d4c2e-7f0a-4c1e-9d3b-000000000001\r\n" \
    b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-hyphal-deadline: 14998\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 18\r\n\r\n"
            b"hello from the app")


class MemoryTransport(asyncio.Transport):
    """Collects writes; `peercert` for an inbound listener's client certificate."""

    def __init__(self, peercert: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.peercert = peercert
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("127.0.0.1", 40000)
        if name == "peercert":
            return self.peercert
        return default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def configs() -> tuple[ProxyConfig, ProxyConfig]:
    route = Route("default", RouteMatch(), ClusterAction.single("product"))
    table = RouteTable.build("outbound_http", (VirtualHost("product", ("*",), (route,)),))
    product = ClusterSpec("product", (EndpointSpec("127.0.0.1", 1),), service="product")
    outbound = ProxyConfig(
        "1", (ListenerSpec("outbound_http", "127.0.0.1", 0, ListenerKind.OUTBOUND_HTTP,
                           route_config="outbound_http"),),
        {"outbound_http": table}, {"product": product}, identity=TD + "frontend",
        workload="frontend", namespace="shop")
    rbac = RbacEngine(allow=(RbacPolicy("frontend", AnyRule(), OrRule((PrincipalRule(
        StringMatch(StringKind.EXACT, TD + "frontend")),))),))
    app_route = Route("default", RouteMatch(), ClusterAction.single("inbound|8080||"))
    inbound = ProxyConfig(
        "1", (ListenerSpec("inbound|8080", "127.0.0.1", 0, ListenerKind.INBOUND_HTTP,
                           tls=DownstreamTls(), rbac=rbac,
                           inline_routes=RouteTable.build(
                               "inbound", (VirtualHost("inbound", ("*",), (app_route,)),))),),
        {}, {"inbound|8080||": ClusterSpec("inbound|8080||", (EndpointSpec("127.0.0.1", 2),))},
        identity=TD + "product", workload="product", namespace="shop")
    return outbound, inbound


async def run_one(config: ProxyConfig, requests: int) -> float:
    """µs per request through one sidecar, in memory."""
    log = AccessLog("/dev/null")
    plane = DataPlane(ConfigHolder(), None, log, Stats())
    plane.holder.swap(config)
    spec = config.listeners[0]
    ctx = plane._context(spec)
    cluster = next(iter(config.clusters.values()))
    peercert = ({"subjectAltName": (("URI", TD + "frontend"),)} if spec.tls is not None
                else None)
    down = HttpDownstream(ctx)
    down_t = MemoryTransport(peercert)
    down.connection_made(down_t)
    key = pool_key(cluster.endpoints[0], cluster)
    up = UpstreamConnection(ctx.pool, key, cluster.name)
    up_t = MemoryTransport()
    up.connection_made(up_t)
    ctx.pool._all.add(up)
    ctx.pool.release(up, True, None)
    started = time.process_time()  # CPU time: steadier than wall time on a shared machine
    request = INBOUND_REQUEST if spec.tls is not None else REQUEST
    for _ in range(requests):
        down.data_received(request)
        while not up_t.written:
            await asyncio.sleep(0)
        up_t.written.clear()
        up.data_received(RESPONSE)
        while not down_t.written:
            await asyncio.sleep(0)
        down_t.written.clear()
    elapsed = time.process_time() - started
    log.close()
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    import uvloop

    outbound, inbound = configs()

    async def both() -> None:
        for label, config in (("outbound", outbound), ("inbound", inbound)):
            await run_one(config, 1000)  # warm up
            print(f"{label:9} {await run_one(config, args.requests):6.1f} µs CPU/request", flush=True)

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        uvloop.run(both())
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
    else:
        uvloop.run(both())


if __name__ == "__main__":
    main()
