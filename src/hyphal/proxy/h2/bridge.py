"""Protocol bridging: HTTP/2 streams over HTTP/1.1 upstreams and HTTP/1.1 requests over HTTP/2.

Both directions are adapters at the connection seam, so every decision (route, RBAC, faults,
retries, outlier detection, breakers, deadlines, mirrors, telemetry) stays the exchange's own:

- `H1Stream` gives an HTTP/1.1 pooled connection the stream API of `H2Upstream`
  (`open_stream`, `send_data`, `send_headers`, `cancel`, `ack`): an h2 (non-gRPC) request
  routed to an HTTP/1.1 cluster is written as an HTTP/1.1 request (Host from `:authority`,
  Content-Length when the client gave one, chunked otherwise) and the response comes back as
  stream events. `H1Pool` is the pool face of it over `ConnectionPool`.
- `H2Stream` gives one stream of a multiplexed `H2Upstream` the connection API of
  `UpstreamConnection` (`begin`, `write`, `close`, `abort`): the HTTP/1.1 exchange writes its
  request bytes as usual, they are parsed back (`RequestReader`) into a HEADERS block and
  DATA, and the h2 response is delivered as `ResponseHead`/body/end callbacks, which the
  HTTP/1.1 relay frames with Content-Length or chunked. `H2Bridge` is what
  `ConnectionPool.h2` calls for clusters with `http2` set.

Bridged bodies are relayed as they come; HTTP/2 trailers do not cross to HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final, cast

from h2.exceptions import H2Error

from hyphal.proxy.h2.endpoint import OnSent
from hyphal.proxy.h2.grpc import H2Headers
from hyphal.proxy.h2.headers import CONNECTION_SPECIFIC
from hyphal.proxy.http.codec import (
    Body,
    MessageEnd,
    ParseError,
    RequestHead,
    RequestReader,
    ResponseHead,
)
from hyphal.proxy.http.headers import LAST_CHUNK, REASONS, encode_chunk, request_head
from hyphal.proxy.runtime.tables import ClusterSpec, EndpointSpec
from hyphal.proxy.upstream.pool import ConnectionPool, PoolKey, UpstreamConnection, UpstreamSink

if TYPE_CHECKING:
    from hyphal.proxy.h2.upstream import H2Pool, H2Upstream, StreamSink

log = logging.getLogger(__name__)

_BODY_METHODS: Final = frozenset({b"POST", b"PUT", b"PATCH"})


# ================================================================ h2 stream -> HTTP/1.1
def h1_request(block: H2Headers, end: bool) -> tuple[bytes, bool, bool]:
    """(HTTP/1.1 request head, chunked body, HEAD request) for an h2 request block. Pure."""
    method = path = authority = b""
    regular: list[tuple[bytes, bytes]] = []
    length: bytes | None = None
    for name, value in block:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
        elif name not in CONNECTION_SPECIFIC:  # te: trailers stays (gRPC servers want it)
            if name == b"content-length":
                length = value
            regular.append((name, value))
    headers = [(b"host", authority), *regular]
    chunked = not end and length is None
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    elif end and length is None and method in _BODY_METHODS:
        headers.append((b"content-length", b"0"))
    return request_head(method, path, headers), chunked, method == b"HEAD"


def h2_response(head: ResponseHead) -> H2Headers:
    """The h2 response block for an HTTP/1.1 response head (names lower-cased; the relay's
    `downstream_block` drops connection-specific headers). Pure."""
    return [(b":status", str(head.status).encode()),
            *((name.lower(), value) for name, value in head.headers)]


class H1Stream:
    """One request/response on an HTTP/1.1 connection, with `H2Upstream`'s stream API."""

    def __init__(self, pool: ConnectionPool, conn: UpstreamConnection,
                 spec: ClusterSpec) -> None:
        self.pool = pool
        self.conn = conn
        self.spec = spec
        self.sink: StreamSink | None = None
        self.chunked = False
        self.informational = False
        self.until_close = False

    def has_room(self) -> bool:
        return self.sink is None and not self.conn.closed

    # ------------------------------------------------------------ the exchange's side
    def open_stream(self, sink: StreamSink, block: H2Headers, end: bool) -> int:
        head, self.chunked, head_request = h1_request(block, end)
        self.sink = sink
        self.conn.begin(self, head_request)
        self.conn.write(head)
        return 1

    def send_data(self, stream_id: int, data: bytes, end: bool,
                  on_sent: OnSent | None = None) -> None:
        if data:
            self.conn.write(encode_chunk(data) if self.chunked else data)
        if end and self.chunked:
            self.conn.write(LAST_CHUNK)
        if on_sent is not None:
            on_sent()  # handed to the socket: TCP's flow control takes over

    def send_headers(self, stream_id: int, headers: H2Headers, end: bool) -> None:
        """Request trailers: HTTP/1.1 upstreams do not get them; the body ends."""
        if end:
            self.send_data(stream_id, b"", True)

    def cancel(self, stream_id: int) -> None:
        if self.sink is not None:
            self.sink = None
            self.conn.abort()

    def ack(self, stream_id: int, size: int) -> None:
        """No HTTP/2 window to give back on an HTTP/1.1 connection."""

    # ------------------------------------------------------------ UpstreamSink
    def on_response_head(self, head: ResponseHead) -> None:
        if 100 <= head.status < 200:
            self.informational = True  # 1xx (101 too: nothing to upgrade to on h2)
            return
        self.until_close = not head.chunked and head.content_length is None
        if self.sink is not None:
            self.sink.on_response(h2_response(head), False)

    def on_response_body(self, data: bytes) -> None:
        if self.sink is not None and not self.informational:
            self.sink.on_data(data, 0)

    def on_response_end(self, keep_alive: bool) -> None:
        if self.informational:
            self.informational = False
            return
        sink, self.sink = self.sink, None
        self.pool.release(self.conn, keep_alive, self.spec.max_requests_per_connection)
        if sink is not None:
            sink.on_end()

    def on_upstream_upgrade(self, rest: bytes) -> None:
        self.on_upstream_error("upgrade")

    def on_tunnel_data(self, data: bytes) -> None:
        pass

    def on_upstream_error(self, detail: str) -> None:
        log.debug("cluster %s: bridged HTTP/1.1 response broken: %s", self.spec.name, detail)
        sink, self.sink = self.sink, None
        self.conn.abort()
        if sink is not None:
            sink.on_reset(False)

    def on_upstream_lost(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            if self.until_close:
                sink.on_end()  # a response delimited by the connection's end
            else:
                sink.on_reset(False)

    def on_upstream_flush(self) -> None:
        pass

    def upstream_pause_writing(self) -> None:
        pass

    def upstream_resume_writing(self) -> None:
        pass


class H1Pool:
    """`H2Pool`'s face over the HTTP/1.1 `ConnectionPool` (for `H2Exchange._connection`)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def ready(self, endpoint: EndpointSpec, spec: ClusterSpec) -> H1Stream | None:
        conn = self.pool.idle_connection(endpoint, spec)
        return None if conn is None else H1Stream(self.pool, conn, spec)

    async def acquire(self, endpoint: EndpointSpec, spec: ClusterSpec,
                      timeout_s: float) -> tuple[H1Stream, bool]:
        conn, reused = await self.pool.acquire(endpoint, spec, timeout_s)
        return H1Stream(self.pool, conn, spec), reused

    def connections(self, cluster: str) -> int:
        return self.pool.connections(cluster)

    def close_one_idle(self, cluster: str) -> bool:
        return self.pool.close_one_idle(cluster)

    async def wait_for_room(self, cluster: str, timeout_s: float) -> bool:
        return await self.pool.wait_for_connection(cluster, timeout_s)


# ================================================================ HTTP/1.1 request -> h2
def h2_request(head: RequestHead, tls: bool) -> H2Headers:
    """The h2 request block for an HTTP/1.1 request head as the exchange wrote it. Pure."""
    block: H2Headers = [(b":method", head.method), (b":scheme", b"https" if tls else b"http"),
                        (b":path", head.target), (b":authority", head.host or b"")]
    for name, value in head.headers:
        lower = name.lower()
        if lower in CONNECTION_SPECIFIC or lower == b"expect":
            continue
        if lower == b"te" and value.strip().lower() != b"trailers":
            continue
        block.append((lower, value))
    return block


def h1_response(block: H2Headers, ended: bool, head_request: bool) -> ResponseHead:
    """The ResponseHead for an h2 response block: chunked unless it has a Content-Length
    (so the HTTP/1.1 relay frames it and never mistakes a reset for the end), length 0 when
    the HEADERS frame ended the stream. Pure."""
    status = 0
    length: int | None = None
    headers: list[tuple[bytes, bytes]] = []
    for name, value in block:
        if name == b":status":
            status = int(value)
        elif name[:1] != b":":
            if name == b"content-length" and value.isdigit():
                length = int(value)
            headers.append((name, value))
    if ended and length is None and not head_request:
        length = 0
    return ResponseHead(status, REASONS.get(status, b"Unknown"), b"1.1", headers,
                        length is None and not ended, length)


class H2Stream:
    """One stream of an `H2Upstream`, with `UpstreamConnection`'s API for the HTTP/1.1
    exchange (one request; it is never pooled: `closed` once the response ended)."""

    def __init__(self, up: H2Upstream, spec: ClusterSpec) -> None:
        self.up = up
        self.spec = spec
        self.key: PoolKey = up.key
        self.cluster = spec.name
        self.transport: asyncio.Transport | None = None  # never paused: h2 flow control
        self.sink: UpstreamSink | None = None
        self.reader = RequestReader()
        self.sid = 0
        self.requests = 0
        self.idle_since = time.monotonic()
        self.closed = False
        self.tunnel = False
        self.peer_identity = up.peer_identity
        self.head_request = False
        self.body_expected = False

    # ------------------------------------------------------------ the exchange's side
    def begin(self, sink: UpstreamSink, head_request: bool) -> None:
        self.sink = sink
        self.requests += 1
        self.head_request = head_request

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        for event in self.reader.feed(data):
            if isinstance(event, RequestHead):
                self._open(event)
            elif isinstance(event, Body):
                if self.sid:
                    self.up.send_data(self.sid, event.data, False)
            elif isinstance(event, MessageEnd):
                if self.sid and self.body_expected:
                    self.up.send_data(self.sid, b"", True)
            elif isinstance(event, ParseError):
                self._fail(f"request the exchange wrote is not HTTP/1.1: {event.detail}")

    def _open(self, head: RequestHead) -> None:
        self.body_expected = head.has_body
        try:
            self.sid = self.up.open_stream(self, h2_request(head, self.spec.tls is not None),
                                           not head.has_body)
        except H2Error as exc:
            self._fail(f"cannot open a stream: {exc}")

    def _fail(self, detail: str) -> None:
        sink, self.sink = self.sink, None
        self.closed = True
        if sink is not None:
            asyncio.get_running_loop().call_soon(sink.on_upstream_error, detail)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sink = None
            if self.sid:
                self.up.cancel(self.sid)

    def abort(self) -> None:
        self.close()

    # ------------------------------------------------------------ StreamSink
    def on_response(self, headers: H2Headers, ended: bool) -> None:
        head = h1_response(headers, ended, self.head_request)
        sink = self.sink
        if sink is None or 100 <= head.status < 200:
            return
        sink.on_response_head(head)
        if ended:
            self.on_end()

    def on_data(self, data: bytes, flow: int) -> None:
        self.up.ack(self.sid, flow)
        if self.sink is not None and data:  # an empty chunk would end a chunked body
            self.sink.on_response_body(data)
            self.sink.on_upstream_flush()

    def on_trailers(self, headers: H2Headers) -> None:
        pass  # HTTP/1.1 responses here carry no trailers; the end follows

    def on_end(self) -> None:
        sink = self.sink
        self.closed = True  # so the pool's release closes it instead of keeping it
        if sink is not None:
            sink.on_response_end(True)
            sink.on_upstream_flush()
        self.sink = None

    def on_reset(self, refused: bool) -> None:
        sink, self.sink = self.sink, None
        self.closed = True
        if sink is not None:
            sink.on_upstream_error("upstream refused the stream" if refused
                                   else "upstream reset the stream")


class H2Bridge:
    """What `ConnectionPool.h2` calls for clusters with `http2` set: HTTP/1.1 exchanges (and
    mirrors) get an `H2Stream` on a multiplexed connection of the `H2Pool`."""

    def __init__(self, pool: H2Pool) -> None:
        self.pool = pool

    def idle_connection(self, endpoint: EndpointSpec,
                        cluster: ClusterSpec) -> UpstreamConnection | None:
        up = self.pool.ready(endpoint, cluster)
        return None if up is None else cast(UpstreamConnection, H2Stream(up, cluster))

    async def acquire(self, endpoint: EndpointSpec, cluster: ClusterSpec,
                      timeout_s: float) -> tuple[UpstreamConnection, bool]:
        up, reused = await self.pool.acquire(endpoint, cluster, timeout_s)
        return cast(UpstreamConnection, H2Stream(up, cluster)), reused

    def connections(self, cluster: str) -> int:
        return self.pool.connections(cluster)

    async def wait_for_connection(self, cluster: str, timeout_s: float) -> bool:
        return await self.pool.wait_for_room(cluster, timeout_s)
