"""HTTP/2 features of one in-process data plane with real sockets: Retry-After on plain h2,
breakers on the h2 pool, mirrors of h2 requests, protocol bridging both ways (HTTP/1.1 client
to an h2c app, h2c client to an HTTP/1.1 app), and grpc_response_status in the stats.

Apps: `h2c_app.H2cApp` (the `h2` library, prior knowledge) and a stdlib HTTP/1.1 app; the
client is httpx (HTTP/1.1, or h2c prior knowledge with `http1=False, http2=True`).
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from h2c_app import H2cApp

from hyphal.proxy.dataplane import DataPlane
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import (
    CircuitBreaker,
    ClusterAction,
    ClusterSpec,
    EndpointSpec,
    ListenerKind,
    ListenerSpec,
    MirrorPolicy,
    PathKind,
    PathMatch,
    ProxyConfig,
    RetryPolicy,
    Route,
    RouteMatch,
    RouteTable,
    VirtualHost,
)
from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import Stats

pytestmark = pytest.mark.timeout(30)


class _H1Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        reply = json.dumps({"name": "h1", "protocol": self.request_version,
                            "method": self.command, "path": self.path,
                            "host": self.headers.get("Host", ""), "size": len(body),
                            "te": self.headers.get("TE", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = _answer


@pytest.fixture
def h1_app() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _H1Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


H2_CLUSTER = "outbound|80||web.demo.svc.cluster.local"
H1_CLUSTER = "outbound|80||legacy.demo.svc.cluster.local"
SHADOW_CLUSTER = "outbound|80||shadow.demo.svc.cluster.local"


async def _plane(clusters: dict[str, ClusterSpec], routes: tuple[Route, ...],
                 stats: Stats) -> tuple[DataPlane, int]:
    out = ListenerSpec("outbound_http", "127.0.0.1", 0, ListenerKind.OUTBOUND_HTTP,
                       route_config="outbound_http")
    table = RouteTable.build("outbound_http", (VirtualHost("web", ("web", "web:80"), routes),))
    plane = DataPlane(ConfigHolder(), None, AccessLog(None), stats)
    await plane.apply(ProxyConfig("1", (out,), {"outbound_http": table}, clusters,
                                  identity="spiffe://cluster.local/ns/demo/sa/client"))
    return plane, plane.port_of(out.name)


def _prefix(prefix: str) -> RouteMatch:
    return RouteMatch(PathMatch(PathKind.PREFIX, prefix))


@pytest.fixture
async def web(h1_app: int) -> AsyncIterator[dict[str, Any]]:
    app = await H2cApp.start("web")
    shadow = await H2cApp.start("shadow")
    stats = Stats()
    clusters = {
        H2_CLUSTER: ClusterSpec(H2_CLUSTER, (EndpointSpec("127.0.0.1", app.port),), http2=True,
                                circuit_breaker=CircuitBreaker(max_connections=1,
                                                               max_pending_requests=1)),
        H1_CLUSTER: ClusterSpec(H1_CLUSTER, (EndpointSpec("127.0.0.1", h1_app),)),
        SHADOW_CLUSTER: ClusterSpec(SHADOW_CLUSTER, (EndpointSpec("127.0.0.1", shadow.port),),
                                    http2=True),
    }
    routes = (
        Route("retry", _prefix("/retry-after/"), ClusterAction.single(H2_CLUSTER),
              retry=RetryPolicy(num_retries=1, retry_on=frozenset({"retriable-status-codes"}))),
        Route("legacy", _prefix("/legacy"), ClusterAction.single(H1_CLUSTER)),
        Route("mirrored", _prefix("/mirrored"), ClusterAction.single(H2_CLUSTER),
              mirrors=(MirrorPolicy(SHADOW_CLUSTER, 1.0),)),
        Route("web", RouteMatch(), ClusterAction.single(H2_CLUSTER)),
    )
    plane, port = await _plane(clusters, routes, stats)
    try:
        yield {"port": port, "app": app, "shadow": shadow, "stats": stats, "plane": plane}
    finally:
        await plane.close()
        app.close()
        shadow.close()


def _h2c(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=False, http2=True, base_url=f"http://127.0.0.1:{port}",
                             headers={"host": "web"}, timeout=5)


async def test_plain_h2_retry_honours_retry_after(web: dict[str, Any]) -> None:
    async with _h2c(web["port"]) as client:
        resp = await client.get("/retry-after/1")
    assert resp.status_code == 200 and resp.http_version == "HTTP/2"
    (first, _), (second, _) = web["app"].requests
    assert second - first >= 0.95  # the upstream's Retry-After, not the 25 ms backoff
