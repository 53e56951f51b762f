"""The mTLS leg between two data planes, per request over real sockets: one TLS write each way
for a small request and its response, reads decrypted into the lent buffer (no 256 KiB
allocation per read), TCP_NODELAY and TLS 1.3 on both ends, no session tickets, and bodies
larger than the read buffer intact."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from hyphal.proxy.http.readbuf import READ_BUFFER_SIZE
from hyphal.proxy.http.server import HttpDownstream
from hyphal.proxy.runtime.tables import UpstreamTls, VirtualHost
from hyphal.proxy.upstream.pool import UpstreamConnection

from .mesh import cluster, config, free_port, inbound_listener, outbound_listener, route_to, table

pytestmark = pytest.mark.e2e

FRONTEND = ("shop", "frontend")
PRODUCT = ("shop", "product")
PRODUCT_ID = "spiffe://cluster.local/ns/shop/sa/product"


class App(asyncio.Protocol):
    """Answers each request with one write: its body echoed (what HAProxy does from memory)."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
                                 + body)


class Recorder:
    """Wraps each new connection's transport to count writes and buffered reads per leg."""

    def __init__(self) -> None:
        self.writes: dict[str, list[int]] = {"up": [], "down": []}
        self.transports: dict[str, list[Any]] = {"up": [], "down": []}
        self.buffered_reads = {"up": 0, "down": 0}


class CountingWrites:
    def __init__(self, inner: Any, sizes: list[int]) -> None:
        self._inner = inner
        self._sizes = sizes

    def write(self, data: bytes) -> None:
        self._sizes.append(len(data))
        self._inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    for cls, leg in ((UpstreamConnection, "up"), (HttpDownstream, "down")):
        made = cls.connection_made
        updated = cls.buffer_updated

        def connection_made(self: Any, transport: Any, _made: Any = made,
                            _leg: str = leg) -> None:
            if transport.get_extra_info("sslcontext") is not None:
                rec.transports[_leg].append(transport)
                transport = CountingWrites(transport, rec.writes[_leg])
            _made(self, transport)

        def buffer_updated(self: Any, nbytes: int, _updated: Any = updated,
                           _leg: str = leg) -> None:
            if isinstance(self.transport, CountingWrites):
                rec.buffered_reads[_leg] += 1
            _updated(self, nbytes)

        monkeypatch.setattr(cls, "connection_made", connection_made)
        monkeypatch.setattr(cls, "buffer_updated", buffer_updated)
    return rec


async def chain(pki: Any, dataplane: Any) -> tuple[int, asyncio.Server]:
    loop = asyncio.get_running_loop()
    app = await loop.create_server(App, "127.0.0.1", 0)
    app_port = app.sockets[0].getsockname()[1]
    in_port, out_port = free_port(), free_port()
    await dataplane(config("1", (inbound_listener(in_port, "app"),), {},
                           (cluster("app", ("127.0.0.1", app_port)),)),
                    pki.material(*PRODUCT))
    routes = table("outbound_http", VirtualHost("product", ("*",),
                                                (route_to("product", ("product", 1)),)))
    await dataplane(config("1", (outbound_listener(out_port),), {"outbound_http": routes},
                           (cluster("product", ("127.0.0.1", in_port),
                                    tls=UpstreamTls("product", frozenset({PRODUCT_ID}))),)),
                    pki.material(*FRONTEND))
    return out_port, app


async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               body: bytes) -> bytes:
    writer.write(b"POST /orders HTTP/1.1\r\nHost: product\r\nContent-Length: %d\r\n\r\n"
                 % len(body) + body)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 "), head
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return await asyncio.wait_for(reader.readexactly(length), 5)


async def test_one_tls_write_each_way_per_small_request(pki: Any, dataplane: Any,
                                                        recorder: Recorder) -> None:
    out_port, app = await chain(pki, dataplane)
    reader, writer = await asyncio.open_connection("127.0.0.1", out_port)
    try:
        body = b'{"item": "x-42"}'
        await post(reader, writer, body)  # the first request opens the mTLS connection
        recorder.writes["up"].clear()
        recorder.writes["down"].clear()
        for _ in range(20):
            assert await post(reader, writer, body) == body
        # Sidecar A wrote each request (head + body) to the TLS leg in one write, and
        # sidecar B each response (head + body) in one; nothing empty or tiny in between.
        assert len(recorder.writes["up"]) == 20
        assert len(recorder.writes["down"]) == 20
        assert min(recorder.writes["up"] + recorder.writes["down"]) > len(body)
        assert len(recorder.transports["up"]) == 1  # one kept-alive mTLS connection
        assert recorder.buffered_reads["up"] >= 20 and recorder.buffered_reads["down"] >= 20
        for transport in recorder.transports["up"] + recorder.transports["down"]:
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert transport.get_extra_info("cipher")[1] == "TLSv1.3"
        ticket = recorder.transports["up"][0].get_extra_info("ssl_object").session
        assert ticket is None or not ticket.has_ticket  # no tickets after the handshake
    finally:
        writer.close()
        app.close()


async def test_bodies_larger_than_the_read_buffer_cross_the_tls_leg_intact(
        pki: Any, dataplane: Any, recorder: Recorder) -> None:
    out_port, app = await chain(pki, dataplane)
    reader, writer = await asyncio.open_connection("127.0.0.1", out_port)
    try:
        body = bytes(range(256)) * ((2 * READ_BUFFER_SIZE + 12345) // 256)
        assert await post(reader, writer, body) == body
        assert await post(reader, writer, b"small") == b"small"  # the connection goes on
    finally:
        writer.close()
        app.close()
