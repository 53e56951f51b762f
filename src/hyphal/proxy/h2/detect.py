"""Which protocol a new downstream connection speaks: h2c preface, CONNECT, ALPN or HTTP/1.1.

A plaintext HTTP listener hands each connection to a `Sniffer` first. It looks at the first
bytes only: the HTTP/2 connection preface (`PRI * HTTP/2.0...`, what gRPC clients send with
prior knowledge) makes an `H2Downstream`; on the outbound listener, `CONNECT host:port` to a
host the route table knows (what grpcio sends through `http_proxy`) is answered `200` and the
tunnel is sniffed again as a connection to that authority; anything else is HTTP/1.1 and goes
to `HttpDownstream` with the bytes read so far. After the hand-off the transport talks to the
chosen protocol directly, so the HTTP/1.1 hot path pays once per connection, not per request.
On TLS listeners `AlpnDispatch` does the same from the negotiated ALPN protocol.

The HTTP/2 side (`hyphal.proxy.h2.server` and the h2/hpack/hyperframe libraries, ~1.7 MB RSS)
is imported by the first connection that needs it, unless the data plane loaded it already
for a config with HTTP/2 clusters (`DataPlane.apply`): an HTTP/1.1-only sidecar never does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, cast

from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.http.headers import local_response
from hyphal.proxy.runtime.tables import ListenerKind

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_CONNECT: Final = b"CONNECT "
_MAX_CONNECT_HEAD: Final = 8192
ESTABLISHED: Final = b"HTTP/1.1 200 Connection established\r\n\r\n"


def classify(data: bytes, outbound: bool) -> str:
    """`h2`, `connect`, `http1`, or `more` (not enough bytes to tell yet). Pure."""
    n = min(len(data), len(PREFACE))
    if data[:n] == PREFACE[:n]:
        return "h2" if n == len(PREFACE) else "more"
    if outbound:
        n = min(len(data), len(_CONNECT))
        if data[:n] == _CONNECT[:n]:
            return "connect" if n == len(_CONNECT) else "more"
    return "http1"


def parse_connect(data: bytes) -> tuple[str | None, bytes] | None:
    """(authority or None if malformed, bytes after the head) once the CONNECT head is
    complete; None while it is not."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    line = data[:data.find(b"\r\n")]
    parts = line.split(b" ")
    rest = data[end + 4:]
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None, rest
    try:
        authority = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None, rest
    host, sep, port = authority.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in authority or "@" in authority:
        return None, rest
    return authority, rest


class Sniffer(asyncio.Protocol):
    """The first protocol of a plaintext HTTP connection (see the module docstring)."""

    def __init__(self, ctx: ListenerContext, http1: Callable[[], asyncio.Protocol]) -> None:
        self.ctx = ctx
        self.http1 = http1
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.authority = ""  # the CONNECT target, once tunnelled
        self.since = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.ctx.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        outbound = self.ctx.spec.kind is ListenerKind.OUTBOUND_HTTP and not self.authority
        kind = classify(self.buf, outbound)
        if kind == "more":
            return
        if kind == "h2":
            from hyphal.proxy.h2.server import H2Downstream  # once per connection, see top

            self._hand_off(H2Downstream(self.ctx, self.authority))
        elif kind == "http1":
            self._hand_off(self.http1())
        else:
            self._connect()

    def _connect(self) -> None:
        parsed = parse_connect(self.buf)
        if parsed is None:
            if len(self.buf) > _MAX_CONNECT_HEAD:
                self._refuse(431, "request_headers_too_large")
            return
        authority, rest = parsed
        if authority is None:
            self._refuse(400, "bad_request_target")
            return
        # Only an exact `host:port` domain of a mesh service is tunnelled (no wildcard, no
        # bare-host fallback): CONNECT is for reaching services, not an open proxy.
        table = self.ctx.holder.current.route_table_for(self.ctx.spec)
        if table is None or authority.lower() not in table.exact:
            self._refuse(400, "connect_target_unknown")
            return
        assert self.transport is not None
        self.transport.write(ESTABLISHED)
        self.authority = authority
        self.buf = b""
        self.since = time.monotonic()
        if rest:
            self.data_received(rest)

    def _refuse(self, status: int, reason: str) -> None:
        self.ctx.stats.count("hyphal_downstream_rq_rejected", reason)
        if self.transport is not None:
            self.transport.write(local_response(status, reason, close=True))
            self.transport.close()
        self.buf = b""

    def _hand_off(self, proto: asyncio.Protocol) -> None:
        transport = self.transport
        assert transport is not None
        self.ctx.connections.discard(self)
        buf, self.buf = self.buf, b""
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if buf and not transport.is_closing():
            proto.data_received(buf)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)

    def check_timers(self, now: float) -> None:
        """Nothing decisive within the header timeout: close (slowloris)."""
        if now - self.since >= self.ctx.timeouts.header_s and self.transport is not None:
            self.ctx.connections.discard(self)
            self.transport.close()

    def drain(self) -> None:
        if self.transport is not None and not self.buf:
            self.transport.close()


class AlpnDispatch(asyncio.Protocol):
    """The first protocol of a TLS connection: ALPN `h2` -> H2Downstream, else HTTP/1.1."""

    def __init__(self, ctx: ListenerContext, http1: Callable[[], asyncio.Protocol]) -> None:
        self.ctx = ctx
        self.http1 = http1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        proto: asyncio.Protocol
        if alpn == "h2":
            from hyphal.proxy.h2.server import H2Downstream  # once per connection, see top

            proto = H2Downstream(self.ctx)
        else:
            proto = self.http1()
        transport.set_protocol(proto)
        proto.connection_made(transport)


def http_factory(ctx: ListenerContext, http1: Callable[[], asyncio.Protocol],
                 tls: bool) -> Callable[[], asyncio.Protocol]:
    """The protocol factory for an HTTP listener (plaintext: sniff; TLS: ALPN)."""
    if tls:
        return lambda: AlpnDispatch(ctx, http1)
    return lambda: Sniffer(ctx, http1)
