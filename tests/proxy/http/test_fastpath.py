"""The exchange's fast path, driven in memory: taken for plain requests, not for faults or
mirrors, and failures before commit handed to the general path (retries, stale connections)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memory_transport import MemoryTransport

from hyphal.proxy.dataplane import DataPlane
from hyphal.proxy.http.server import HttpDownstream
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
    EndpointSpec,
    FaultSpec,
    ListenerKind,
    ListenerSpec,
    MirrorPolicy,
    ProxyConfig,
    RetryPolicy,
    Route,
    RouteMatch,
    RouteTable,
    VirtualHost,
)
from hyphal.proxy.upstream.pool import UpstreamConnection, pool_key
from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import Stats

GET = b"GET /items/1 HTTP/1.1\r\nHost: product\r\nAccept: */*\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"


class Rig:
    """One outbound listener, one downstream connection, pooled upstream connections."""

    def __init__(self, route: Route, log_path: Path) -> None:
        table = RouteTable.build("out", (VirtualHost("product", ("*",), (route,)),))
        self.cluster = ClusterSpec("product", (EndpointSpec("127.0.0.1", 1),))
        self.config = ProxyConfig(
            "1", (ListenerSpec("out", "127.0.0.1", 0, ListenerKind.OUTBOUND_HTTP,
                               route_config="out"),), {"out": table},
            {"product": self.cluster, "shadow": ClusterSpec(
                "shadow", (EndpointSpec("127.0.0.1", 2),))})
        self.log = AccessLog(str(log_path))
        self.log_path = log_path
        self.plane = DataPlane(ConfigHolder(), None, self.log, Stats())
        self.plane.holder.swap(self.config)
        self.ctx = self.plane._context(self.config.listeners[0])
        self.down = HttpDownstream(self.ctx)
        self.down_t = MemoryTransport()
        self.down.connection_made(self.down_t)
        self.ups: list[tuple[UpstreamConnection, MemoryTransport]] = []

    def pooled(self) -> tuple[UpstreamConnection, MemoryTransport]:
        conn = UpstreamConnection(self.ctx.pool, pool_key(self.cluster.endpoints[0],
                                                          self.cluster), "product")
        transport = MemoryTransport()
        conn.connection_made(transport)
        self.ctx.pool._all.add(conn)
        self.ctx.pool.release(conn, True, None)
        self.ups.append((conn, transport))
        return conn, transport

    def log_lines(self) -> list[dict[str, Any]]:
        self.log.flush()
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]


def route(**kw: Any) -> Route:
    return Route("r", RouteMatch(), ClusterAction.single("product"), **kw)


@pytest.fixture
def rig_for(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(r: Route) -> Rig:
        rig = Rig(r, tmp_path / f"access-{len(rigs)}.log")
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.log.close()


async def test_simple_get_takes_the_fast_path(rig_for: Any) -> None:
    rig = rig_for(route())
    _, up_t = rig.pooled()
    rig.down.data_received(GET)
    # Written upstream inside data_received: no task, no await in between.
    head = up_t.take()
    assert head.startswith(b"GET /items/1 HTTP/1.1\r\nHost: product\r\n")
    exchange = rig.down.queue[0]
    assert exchange.task is None and exchange.fast
    rig.ups[0][0].data_received(OK)
    answer = rig.down_t.take()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok")
    assert not rig.down.queue  # finished in the response callback
    assert rig.ctx.stats.requests_total(200) == 1
    [line] = rig.log_lines()
    assert line["status"] == 200 and line["cluster"] == "product" and line["reason"] == "-"
    assert len(line["request_id"]) == 36 and line["upstream_host"] == "127.0.0.1:1"
    # The connection went back to the pool and serves the next request, also fast.
    rig.down.data_received(GET)
    assert up_t.take().startswith(b"GET /items/1")
    rig.ups[0][0].data_received(OK)
    assert rig.down_t.take().startswith(b"HTTP/1.1 200 OK")
    ids = [entry["request_id"] for entry in rig.log_lines()]
    assert len(set(ids)) == 2


@pytest.mark.parametrize("special", [
    {"fault": FaultSpec(delay_s=0.001, delay_fraction=1.0)},
    {"mirrors": (MirrorPolicy("shadow", 0.0),)},
])
async def test_fault_or_mirror_routes_take_the_general_path(rig_for: Any,
                                                           special: dict[str, Any]) -> None:
    rig = rig_for(route(**special))
    _, up_t = rig.pooled()
    rig.down.data_received(GET)
    exchange = rig.down.queue[0]
    assert exchange.task is not None and not exchange.fast
    assert up_t.written == []  # nothing before the task runs
    for _ in range(100):
        if up_t.written:
            break
        await asyncio.sleep(0.002)
    assert up_t.take().startswith(b"GET /items/1")
    rig.ups[0][0].data_received(OK)
    await asyncio.wait_for(exchange.task, 2)
    assert rig.down_t.take().startswith(b"HTTP/1.1 200 OK")


async def test_retriable_status_on_the_fast_path_is_retried(rig_for: Any) -> None:
    policy = RetryPolicy(num_retries=2, base_interval_s=0.001, max_interval_s=0.002)
    rig = rig_for(route(retry=policy))
    first, first_t = rig.pooled()
    rig.down.data_received(GET)
    assert first_t.take().startswith(b"GET")
    second, second_t = rig.pooled()  # the retry finds this one idle
    first.data_received(UNAVAILABLE)
    exchange = rig.down.queue[0]
    assert exchange.task is not None  # handed over: backoff and retry are the task's
    assert rig.down_t.written == []  # a retried 503 is never sent downstream
    for _ in range(200):
        if second_t.written:
            break
        await asyncio.sleep(0.002)
    assert second_t.take().startswith(b"GET /items/1")
    second.data_received(OK)
    await asyncio.wait_for(exchange.task, 2)
    answer = rig.down_t.take()
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.count(b"HTTP/1.1") == 1
    assert rig.ctx.stats.counter("hyphal_upstream_rq_retry", "product") == 1
    assert first_t.closing  # a connection that answered a retriable status is not reused


async def test_reset_of_a_pooled_connection_is_retried_on_a_fresh_one(rig_for: Any) -> None:
    rig = rig_for(route())
    first, first_t = rig.pooled()
    rig.down.data_received(GET)
    assert first_t.take().startswith(b"GET")
    second, second_t = rig.pooled()
    first.connection_lost(ConnectionResetError())  # the server had closed it meanwhile
    exchange = rig.down.queue[0]
    for _ in range(200):
        if second_t.written:
            break
        await asyncio.sleep(0.002)
    assert second_t.take().startswith(b"GET /items/1")
    second.data_received(OK)
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 2)
    assert rig.down_t.take().startswith(b"HTTP/1.1 200 OK")
    [line] = rig.log_lines()
    assert line["status"] == 200


async def test_pipelined_requests_answer_in_order_on_the_fast_path(rig_for: Any) -> None:
    rig = rig_for(route())
    conn, up_t = rig.pooled()
    rig.down.data_received(GET + GET.replace(b"/items/1", b"/items/2"))
    assert up_t.take().startswith(b"GET /items/1")  # the second waits its turn
    conn.data_received(OK)
    assert up_t.take().startswith(b"GET /items/2")  # started when the first ended
    conn.data_received(OK.replace(b"ok", b"k2"))
    answer = rig.down_t.take()
    assert answer.index(b"\r\n\r\nok") < answer.index(b"\r\n\r\nk2")


async def test_garbage_after_a_whole_request_does_not_cost_that_request(rig_for: Any) -> None:
    rig = rig_for(route())
    conn, up_t = rig.pooled()
    rig.down.data_received(GET + b"NOT HTTP AT ALL\r\n\r\n")
    assert up_t.take().startswith(b"GET /items/1")
    conn.data_received(OK)
    answer = rig.down_t.take()
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"HTTP/1.1 400 Bad Request" in answer
    assert rig.down_t.closing


async def test_client_leaving_mid_attempt_releases_everything(rig_for: Any) -> None:
    rig = rig_for(route())
    conn, up_t = rig.pooled()
    rig.down.data_received(GET)
    assert up_t.take()
    runtime = rig.ctx.clusters.get("product")
    assert runtime is not None and runtime.active == {"127.0.0.1:1": 1}
    rig.down.connection_lost(None)
    assert up_t.closing and runtime.active == {}
    [line] = rig.log_lines()
    assert line["reason"] == "downstream_disconnect"
    assert runtime.breaker.admit_request()  # the admission was given back


def test_rbac_header_map_only_for_header_rules() -> None:
    from hyphal.proxy.http.exchange import rbac_needs_headers
    from hyphal.proxy.runtime.matchers import HeaderMatcher
    from hyphal.proxy.runtime.tables import (
        AnyRule,
        HeaderRule,
        NotRule,
        OrRule,
        PrincipalRule,
        RbacEngine,
        RbacPolicy,
        StringKind,
        StringMatch,
    )

    principal = PrincipalRule(StringMatch(StringKind.EXACT, "spiffe://td/ns/a/sa/b"))
    plain = RbacEngine(allow=(RbacPolicy("p", AnyRule(), OrRule((principal,))),))
    assert not rbac_needs_headers(plain)
    header = HeaderRule(HeaderMatcher("x-user", StringMatch(StringKind.EXACT, "x")))
    deny = RbacEngine(deny=(RbacPolicy("d", OrRule((NotRule(header),)), AnyRule()),))
    assert rbac_needs_headers(deny)


async def test_try_timeouts_on_one_connection_each_keep_their_own_due_time(rig_for: Any) -> None:
    # The connection keeps one timer for its tries: a try that ends leaves it armed, and a
    # later try must neither time out at the earlier try's due time nor be forgotten.
    rig = rig_for(route(timeout_s=0.2))
    conn, up_t = rig.pooled()
    rig.down.data_received(GET)
    assert up_t.take()
    conn.data_received(OK)
    assert rig.down_t.take().startswith(b"HTTP/1.1 200 OK")
    await asyncio.sleep(0.1)
    rig.down.data_received(GET)  # due 0.2 s from now; the timer is still set for the first
    assert up_t.take()
    await asyncio.sleep(0.15)  # past the first request's due time
    assert rig.down_t.written == []
    conn.data_received(OK)
    assert rig.down_t.take().startswith(b"HTTP/1.1 200 OK")
    loop = asyncio.get_running_loop()
    started = loop.time()
    rig.down.data_received(GET)  # never answered
    assert up_t.take()
    for _ in range(200):
        if rig.down_t.written:
            break
        await asyncio.sleep(0.005)
    elapsed = loop.time() - started
    answer = rig.down_t.take()
    assert answer.startswith(b"HTTP/1.1 504") and b"x-hyphal-reason: timeout" in answer
    assert 0.19 <= elapsed < 0.5
    assert up_t.closing  # the timed-out try's connection is not reused


async def test_per_try_timeout_on_the_fast_path_retries(rig_for: Any) -> None:
    policy = RetryPolicy(num_retries=1, per_try_timeout_s=0.05, base_interval_s=0.001,
                         max_interval_s=0.002, retry_on=frozenset({"reset"}))
    rig = rig_for(route(retry=policy))
    first, first_t = rig.pooled()
    rig.down.data_received(GET)
    assert first_t.take()
    second, second_t = rig.pooled()
    for _ in range(100):
        if second_t.written:
            break
        await asyncio.sleep(0.005)
    assert first_t.closing and second_t.take().startswith(b"GET /items/1")
    second.data_received(OK)
    exchange = rig.down.queue[0] if rig.down.queue else None
    if exchange is not None and exchange.task is not None:
        await asyncio.wait_for(exchange.task, 2)
    assert rig.down_t.take().startswith(b"HTTP/1.1 200 OK")
    assert rig.ctx.stats.counter("hyphal_upstream_rq_retry", "product") == 1


async def test_tracing_keeps_the_fast_path_for_unsampled_requests(rig_for: Any) -> None:
    # With an exporter installed, only sampled requests need the general path (it records
    # their span and injects traceparent); the others are forwarded as without tracing.
    from hyphal.telemetry import tracing

    spans: list[tracing.SpanRecord] = []
    before = tracing.TRACER
    try:
        for sampling in (0.0, 1.0):
            tracing.install(tracing.Tracer(tracing.TracingSettings(sampling),
                                           sink=spans.append))
            rig = rig_for(route())
            _, up_t = rig.pooled()
            rig.down.data_received(GET)
            exchange = rig.down.queue[0]
            if sampling == 0.0:
                assert exchange.task is None and exchange.fast and exchange.span is None
            else:
                assert exchange.task is not None and exchange.span is not None
                await asyncio.sleep(0)
            head = up_t.take()
            assert head.startswith(b"GET /items/1 HTTP/1.1\r\nHost: product\r\n")
            assert (b"traceparent: 00-" in head) == (sampling == 1.0)
            rig.ups[0][0].data_received(OK)
            for _ in range(3):
                await asyncio.sleep(0)
            assert rig.down_t.take().startswith(b"HTTP/1.1 200 OK\r\n")
            assert not rig.down.queue
        assert len(spans) == 1 and spans[0].kind == tracing.SPAN_KIND_CLIENT
        assert tracing.TRACER.started == 1  # one sampling decision per request
    finally:
        tracing.install(before)
