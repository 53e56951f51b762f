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
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, ResponseReceived, StreamReset
from h2c_app import H2cApp

from hyphal.proxy.dataplane import DataPlane
from hyphal.proxy.h2.endpoint import GracefulH2Connection
from hyphal.proxy.h2.upstream import H2Pool
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import (
    CircuitBreaker,
    ClusterAction,
    ClusterSpec,
    EndpointSpec,
    H2Keepalive,
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
NARROW_CLUSTER = "outbound|80||narrow.demo.svc.cluster.local"


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
        # one connection of one stream, one pending request: the breakers' smallest shape
        NARROW_CLUSTER: ClusterSpec(NARROW_CLUSTER, (EndpointSpec("127.0.0.1", app.port),),
                                    http2=True, max_concurrent_streams=1, connect_timeout_s=1.0,
                                    circuit_breaker=CircuitBreaker(max_connections=1,
                                                                   max_pending_requests=1)),
        SHADOW_CLUSTER: ClusterSpec(SHADOW_CLUSTER, (EndpointSpec("127.0.0.1", shadow.port),),
                                    http2=True),
    }
    routes = (
        Route("retry", _prefix("/retry-after/"), ClusterAction.single(H2_CLUSTER),
              retry=RetryPolicy(num_retries=1, retry_on=frozenset({"retriable-status-codes"}))),
        Route("legacy", _prefix("/legacy"), ClusterAction.single(H1_CLUSTER)),
        Route("mirrored", _prefix("/mirrored"), ClusterAction.single(H2_CLUSTER),
              mirrors=(MirrorPolicy(SHADOW_CLUSTER, 1.0),)),
        Route("narrow", _prefix("/sleep/"), ClusterAction.single(NARROW_CLUSTER)),
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


async def test_h2_pool_keeps_max_connections_and_max_pending_requests(
        web: dict[str, Any]) -> None:
    async with _h2c(web["port"]) as client:
        replies = await asyncio.gather(
            client.get("/sleep/0.3"),  # the one stream of the one connection
            client.get("/sleep/0.31"),  # pending: waits for it, then runs
            client.get("/sleep/0.32"),  # beyond max_pending_requests
        )
    codes = sorted(r.status_code for r in replies)
    assert codes == [200, 200, 503], [(r.status_code, r.text) for r in replies]
    refused = next(r for r in replies if r.status_code == 503)
    assert refused.headers["x-hyphal-reason"] == "pending_overflow"
    assert web["app"].connections == 1
    assert web["stats"].labeled("hyphal_upstream_rq_overflow_total", (
        ("cluster", NARROW_CLUSTER), ("reason", "pending_overflow"))) == 1


async def test_pending_request_times_out_when_no_stream_ends(web: dict[str, Any]) -> None:
    async with _h2c(web["port"]) as client:
        first = asyncio.ensure_future(client.get("/sleep/1.5"))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        second = await client.get("/sleep/0")
        waited = time.monotonic() - t0
        assert (await first).status_code == 200
    assert second.status_code == 503 and second.headers["x-hyphal-reason"] == "pending_timeout"
    assert 0.9 <= waited < 1.4  # the cluster's 1 s connect timeout bounds the wait


# ---------------------------------------------------------------- liveness of pooled connections
async def _silent_server() -> asyncio.Server:
    """Accepts TCP and never answers: an upstream that hangs without closing."""
    return await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)


async def test_keepalive_ping_closes_a_silent_connection_and_keeps_a_live_one() -> None:
    silent = await _silent_server()
    app = await H2cApp.start("alive")
    stats = Stats()
    pool = H2Pool(None, stats)
    keepalive = H2Keepalive(interval_s=0.1, timeout_s=0.15, jitter=0.0)
    dead_spec = ClusterSpec("dead", (EndpointSpec("127.0.0.1",
                                                  silent.sockets[0].getsockname()[1]),),
                            http2=True, h2_keepalive=keepalive)
    live_spec = ClusterSpec("live", (EndpointSpec("127.0.0.1", app.port),), http2=True,
                            h2_keepalive=keepalive)
    try:
        dead, _ = await pool.acquire(dead_spec.endpoints[0], dead_spec, 1.0)
        live, _ = await pool.acquire(live_spec.endpoints[0], live_spec, 1.0)
        await asyncio.sleep(0.6)
        assert dead.closed and pool.connections("dead") == 0
        assert stats.counter("hyphal_upstream_cx_keepalive_timeout", "dead") == 1
        assert not live.closed and pool.connections("live") == 1  # its PINGs were answered
    finally:
        pool.close_all()
        silent.close()
        app.close()


async def test_idle_sweep_closes_connections_without_a_request_looking() -> None:
    app = await H2cApp.start("idle")
    pool = H2Pool(None, Stats())
    spec = ClusterSpec("idle", (EndpointSpec("127.0.0.1", app.port),), http2=True,
                       idle_timeout_s=0.2)
    try:
        conn, _ = await pool.acquire(spec.endpoints[0], spec, 1.0)
        await asyncio.sleep(0.1)
        assert not conn.closed and app.connections == 1
        await asyncio.sleep(0.4)
        assert conn.closed and pool.connections("idle") == 0
        assert app.connections == 0
    finally:
        pool.close_all()
        app.close()


# ---------------------------------------------------------------- drain
async def test_drain_sends_goaway_first_and_finishes_streams_in_flight(
        web: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", web["port"])
    client = GracefulH2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"web")]
    client.send_headers(1, [*request, (b":path", b"/sleep/0.4")], end_stream=True)
    writer.write(client.data_to_send())
    seen: list[tuple[str, int]] = []
    drained = asyncio.ensure_future(asyncio.sleep(0.15))
    drain: asyncio.Future[None] | None = None
    try:
        async with asyncio.timeout(5):
            while True:
                if drain is None and drained.done():
                    drain = asyncio.ensure_future(web["plane"].drain(3.0))
                try:
                    data = await asyncio.wait_for(reader.read(65536), 0.05)
                except TimeoutError:
                    continue
                if not data:
                    seen.append(("eof", 0))
                    break
                for event in client.receive_data(data):
                    if isinstance(event, ConnectionTerminated):
                        seen.append(("goaway", event.last_stream_id or 0))
                        if len(seen) == 1:  # sent after the GOAWAY: refused, never routed
                            client.send_headers(3, [*request, (b":path", b"/late")],
                                                end_stream=True)
                    elif isinstance(event, ResponseReceived):
                        seen.append(("response", event.stream_id))
                    elif isinstance(event, StreamReset):
                        seen.append(("refused" if event.error_code == ErrorCodes.REFUSED_STREAM
                                     else "reset", event.stream_id))
                writer.write(client.data_to_send())
    finally:
        writer.close()
        if drain is not None:
            await drain
    assert seen[0] == ("goaway", 1), seen
    assert ("refused", 3) in seen and ("response", 1) in seen and seen[-1] == ("eof", 0)
    assert seen.index(("goaway", 1)) < seen.index(("response", 1))
    assert [p for _, p in web["app"].requests] == ["/sleep/0.4"]


# ---------------------------------------------------------------- protocol bridging
async def test_http11_request_to_an_http2_cluster_is_carried_over_h2(
        web: dict[str, Any]) -> None:
    base = f"http://127.0.0.1:{web['port']}"
    async with httpx.AsyncClient(base_url=base, headers={"host": "web"}, timeout=5) as client:
        get = await client.get("/items?x=1")
        post = await client.post("/items", content=b"a" * 70_000)  # beyond one h2 window
        chunks = await client.get("/chunks")

        async def parts() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"z" * 1000
        streamed = await client.post("/items", content=parts())  # chunked upload
    assert get.http_version == "HTTP/1.1" and get.status_code == 200
    seen = get.json()
    assert seen["protocol"] == "h2" and seen["method"] == "GET" and seen["path"] == "/items?x=1"
    assert seen["authority"] == "web" and "x-request-id" in seen["headers"]
    assert "connection" not in seen["headers"] and "host" not in seen["headers"]
    assert post.json()["size"] == 70_000 and post.json()["method"] == "POST"
    assert streamed.json()["size"] == 3000
    assert chunks.text == "one,two,three"  # no Content-Length upstream: chunked to HTTP/1.1
    assert chunks.headers["transfer-encoding"] == "chunked"
    assert web["app"].connections == 1  # all four were streams of one connection


async def test_h2_request_to_an_http11_cluster_is_carried_over_http11(
        web: dict[str, Any]) -> None:
    async with _h2c(web["port"]) as client:
        get = await client.get("/legacy/a?b=1")
        post = await client.post("/legacy/p", content=b"q" * 70_000)

        async def parts() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"z" * 1000
        streamed = await client.post("/legacy/s", content=parts())
    assert get.http_version == "HTTP/2" and get.status_code == 200
    seen = get.json()
    assert seen["name"] == "h1" and seen["protocol"] == "HTTP/1.1"
    assert seen["path"] == "/legacy/a?b=1" and seen["host"] == "web"
    assert post.json()["size"] == 70_000 and streamed.json()["size"] == 3000


async def test_grpc_is_never_bridged_to_http11(web: dict[str, Any]) -> None:
    async with _h2c(web["port"]) as client:
        resp = await client.post("/legacy/g.S/M", content=b"",
                                 headers={"content-type": "application/grpc", "te": "trailers"})
    assert resp.status_code == 200 and resp.headers["grpc-status"] == "14"
    assert resp.headers["x-hyphal-reason"] == "upstream_protocol_unsupported"


# ---------------------------------------------------------------- mirrors
async def test_h2_and_bridged_requests_are_mirrored_to_the_shadow(web: dict[str, Any]) -> None:
    async with _h2c(web["port"]) as client:
        resp = await client.post("/mirrored/h2", content=b"m" * 5000)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web['port']}",
                                 headers={"host": "web"}, timeout=5) as client:
        bridged = await client.post("/mirrored/h1", content=b"n" * 300)
    assert resp.status_code == 200 and bridged.status_code == 200
    shadow: H2cApp = web["shadow"]
    for _ in range(100):
        if len(shadow.requests) == 2:
            break
        await asyncio.sleep(0.02)
    got = sorted((str(r["path"]), r["authority"], r["size"]) for r in shadow.received)
    assert got == [("/mirrored/h1", "web-shadow", 300), ("/mirrored/h2", "web-shadow", 5000)]
    assert web["stats"].counter("hyphal_mirror_requests_total", SHADOW_CLUSTER) == 2
    assert web["stats"].counter("hyphal_mirror_failed_total", SHADOW_CLUSTER) == 0
