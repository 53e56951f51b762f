"""What one request costs on the wire, in memory: one write each way (head and small body
together), on the fast path and on the general path, fed through the buffered-read entry
points (`get_buffer`/`buffer_updated`) that uvloop's TLS layer calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memory_transport import MemoryTransport

from hyphal.proxy.dataplane import DataPlane
from hyphal.proxy.http.readbuf import READ_BUFFER_SIZE, BufferedReads
from hyphal.proxy.http.server import HttpDownstream
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
    EndpointSpec,
    FaultSpec,
    ListenerKind,
    ListenerSpec,
    ProxyConfig,
    Route,
    RouteMatch,
    RouteTable,
    VirtualHost,
)
from hyphal.proxy.upstream.pool import UpstreamConnection, pool_key
from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import Stats

POST = (b"POST /orders HTTP/1.1\r\nHost: product\r\nContent-Type: application/json\r\n"
        b"Content-Length: 17\r\n\r\n{\"item\": \"x-42\"}\n")
OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 18\r\n\r\nhello from the app"


def feed(proto: BufferedReads, data: bytes) -> None:
    """Deliver `data` the way a transport does for a buffered protocol."""
    buf = proto.get_buffer(len(data))
    assert len(buf) >= len(data)
    buf[:len(data)] = data
    proto.buffer_updated(len(data))


class Rig:
    def __init__(self, route: Route, log_path: Path) -> None:
        table = RouteTable.build("out", (VirtualHost("product", ("*",), (route,)),))
        self.cluster = ClusterSpec("product", (EndpointSpec("127.0.0.1", 1),))
        config = ProxyConfig(
            "1", (ListenerSpec("out", "127.0.0.1", 0, ListenerKind.OUTBOUND_HTTP,
                               route_config="out"),), {"out": table}, {"product": self.cluster})
        self.log = AccessLog(str(log_path))
        self.plane = DataPlane(ConfigHolder(), None, self.log, Stats())
        self.plane.holder.swap(config)
        self.ctx = self.plane._context(config.listeners[0])
        self.down = HttpDownstream(self.ctx)
        self.down_t = MemoryTransport()
        self.down.connection_made(self.down_t)
        self.up = UpstreamConnection(self.ctx.pool, pool_key(self.cluster.endpoints[0],
                                                             self.cluster), "product")
        self.up_t = MemoryTransport()
        self.up.connection_made(self.up_t)
        self.ctx.pool._all.add(self.up)
        self.ctx.pool.release(self.up, True, None)


@pytest.fixture
def rig_for(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(route: Route) -> Rig:
        rig = Rig(route, tmp_path / f"access-{len(rigs)}.log")
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.log.close()


async def _wait_for(transport: MemoryTransport, count: int) -> None:
    for _ in range(500):
        if len(transport.written) >= count:
            return
        await asyncio.sleep(0.002)


def test_the_http_protocols_read_into_a_lent_buffer() -> None:
    # uvloop's TLS layer decrypts into get_buffer() only for BufferedProtocols (otherwise it
    # allocates 256 KiB per read); plain asyncio.Protocol subclasses are not treated so.
    assert issubclass(HttpDownstream, asyncio.BufferedProtocol)
    assert issubclass(UpstreamConnection, asyncio.BufferedProtocol)
    assert not issubclass(HttpDownstream, asyncio.Protocol)
    assert not issubclass(UpstreamConnection, asyncio.Protocol)


async def test_fast_path_one_write_each_way_for_small_bodies(rig_for: Any) -> None:
    rig = rig_for(Route("r", RouteMatch(), ClusterAction.single("product")))
    for n in range(1, 6):  # every request on the kept-alive connections
        feed(rig.down, POST)
        assert len(rig.up_t.written) == n  # head and body in one write, inside the read
        sent = rig.up_t.written[-1]
        assert sent.startswith(b"POST /orders HTTP/1.1\r\n")
        assert sent.endswith(b"\r\n\r\n{\"item\": \"x-42\"}\n")
        feed(rig.up, OK)
        assert len(rig.down_t.written) == n  # response head and body in one write
        answer = rig.down_t.written[-1]
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"\r\n\r\nhello from the app")
        assert all(rig.up_t.written) and all(rig.down_t.written)  # no empty writes


async def test_general_path_one_write_each_way_for_small_bodies(rig_for: Any) -> None:
    # A fault route takes the general path (a task) with the same pooled connection.
    rig = rig_for(Route("r", RouteMatch(), ClusterAction.single("product"),
                        fault=FaultSpec(delay_s=0.001, delay_fraction=1.0)))
    for n in range(1, 4):
        feed(rig.down, POST)
        exchange = rig.down.queue[0]
        assert exchange.task is not None
        await _wait_for(rig.up_t, n)
        assert len(rig.up_t.written) == n
        assert rig.up_t.written[-1].endswith(b"\r\n\r\n{\"item\": \"x-42\"}\n")
        feed(rig.up, OK)
        await asyncio.wait_for(exchange.task, 2)
        assert len(rig.down_t.written) == n
        assert rig.down_t.written[-1].endswith(b"\r\n\r\nhello from the app")


async def test_a_response_split_across_reads_is_one_write_per_read(rig_for: Any) -> None:
    # What arrives in one read leaves in one write: no extra write per parser event.
    rig = rig_for(Route("r", RouteMatch(), ClusterAction.single("product")))
    feed(rig.down, POST)
    cut = OK.index(b"\r\n\r\n") + 4
    feed(rig.up, OK[:20])  # part of the head: nothing to send yet
    assert rig.down_t.written == []
    feed(rig.up, OK[20:cut])  # the rest of the head
    feed(rig.up, OK[cut:])  # the body
    assert len(rig.down_t.written) == 2
    assert b"".join(rig.down_t.written).endswith(b"\r\n\r\nhello from the app")


async def test_reads_copy_out_of_the_shared_buffer(rig_for: Any) -> None:
    # The buffer is reused by the next read: what the request keeps must be its own bytes.
    rig = rig_for(Route("r", RouteMatch(), ClusterAction.single("product")))
    body = b"b" * 1000
    post = b"POST /o HTTP/1.1\r\nHost: product\r\nContent-Length: 1000\r\n\r\n"
    feed(rig.down, post)  # the head alone: the exchange waits for its body
    buf = rig.down.get_buffer(READ_BUFFER_SIZE)
    buf[:len(body)] = body
    rig.down.buffer_updated(len(body))
    buf[:len(body)] = b"X" * len(body)  # the next read overwrites the buffer
    assert rig.up_t.written and rig.up_t.written[-1].endswith(body)
    assert rig.down.queue[0].chunks == [body]  # the replay copy is intact
