"""Upstream HTTP/2 connections (client side, multiplexed) and their per-endpoint pool.

One connection per endpoint carries many streams, up to the smaller of the server's
SETTINGS_MAX_CONCURRENT_STREAMS and the cluster's `max_concurrent_streams`; when every
connection to an endpoint is full (or going away) the pool opens another. Connecting goes
through `hyphal.proxy.upstream.pool.open_endpoint` (mTLS and the SPIFFE id check), offering
ALPN `h2` over TLS and speaking prior-knowledge h2c in plaintext.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error

from hyphal.proxy.h2.endpoint import H2Endpoint
from hyphal.proxy.h2.grpc import H2Headers
from hyphal.proxy.runtime.tables import ClusterSpec, EndpointSpec
from hyphal.proxy.transport.tls import TlsMaterial
from hyphal.proxy.upstream.pool import ConnectFailure, PoolKey, open_endpoint, pool_key
from hyphal.telemetry.stats import Stats

log = logging.getLogger(__name__)


class StreamSink(Protocol):
    """What an upstream stream delivers to its exchange."""

    def on_response(self, headers: H2Headers, ended: bool) -> None: ...
    def on_data(self, data: bytes, flow: int) -> None: ...
    def on_trailers(self, headers: H2Headers) -> None: ...
    def on_end(self) -> None: ...
    def on_reset(self, refused: bool) -> None: ...


class H2Upstream(H2Endpoint):
    """One client-side HTTP/2 connection to an endpoint."""

    def __init__(self, pool: H2Pool, key: PoolKey, cluster: str, max_streams: int) -> None:
        super().__init__(H2Connection(H2Configuration(client_side=True, header_encoding=None)))
        self.pool = pool
        self.key = key
        self.cluster = cluster
        self.max_streams = max_streams
        self.sinks: dict[int, StreamSink] = {}
        self.going_away = False
        self.idle_since = time.monotonic()
        self.peer_identity: str | None = None

    # ---------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.initiate_connection()
        self.start(transport)
        self.pool.stats.gauge_add("hyphal_upstream_cx_active", self.cluster, 1)
        self.pool.stats.count("hyphal_upstream_cx_total", self.cluster)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except H2Error as exc:
            log.info("cluster %s: upstream broke HTTP/2 (%s); closing", self.cluster, exc)
            self.flush()
            self.abort()
            return
        for event in events:
            if isinstance(event, DataReceived):
                sink = self.sinks.get(event.stream_id)
                if sink is not None:
                    sink.on_data(event.data, event.flow_controlled_length)
                else:
                    self.ack(event.stream_id, event.flow_controlled_length)
            elif isinstance(event, ResponseReceived):
                sink = self.sinks.get(event.stream_id)
                if sink is not None:
                    sink.on_response(event.headers,
                                     event.stream_ended is not None)
            elif isinstance(event, TrailersReceived):
                sink = self.sinks.get(event.stream_id)
                if sink is not None:
                    sink.on_trailers(event.headers)
            elif isinstance(event, StreamEnded):
                sink = self.sinks.pop(event.stream_id, None)
                if sink is not None:
                    sink.on_end()
                self._stream_gone()
            elif isinstance(event, StreamReset):
                self.forget_stream(event.stream_id)
                sink = self.sinks.pop(event.stream_id, None)
                if sink is not None:
                    sink.on_reset(event.error_code == ErrorCodes.REFUSED_STREAM)
                self._stream_gone()
            elif isinstance(event, WindowUpdated):
                if event.stream_id:
                    self._pump(event.stream_id)
                else:
                    self.pump_all()
            elif isinstance(event, ConnectionTerminated):
                self._goaway(event.last_stream_id)
            elif isinstance(event, InformationalResponseReceived):
                continue
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.stats.gauge_add("hyphal_upstream_cx_active", self.cluster, -1)
        self.pool.forget(self)
        self.forget_all()
        sinks, self.sinks = self.sinks, {}
        for sink in sinks.values():
            sink.on_reset(False)

    def _goaway(self, last_stream_id: int | None) -> None:
        """The server is going away: streams it never saw are refused (safe to retry)."""
        self.going_away = True
        self.pool.forget(self)
        last = last_stream_id if last_stream_id is not None else 2**31
        for stream_id in [s for s in self.sinks if s > last]:
            sink = self.sinks.pop(stream_id)
            self.forget_stream(stream_id)
            sink.on_reset(True)
        self._stream_gone()

    def _stream_gone(self) -> None:
        if not self.sinks:
            self.idle_since = time.monotonic()
            if self.going_away:
                self.close()

    # ---------------------------------------------------------------- used by exchanges
    @property
    def usable(self) -> bool:
        transport = self.transport
        return not (self.closed or self.going_away or transport is None
                    or transport.is_closing())

    def has_room(self) -> bool:
        limit = min(self.max_streams, self.conn.remote_settings.max_concurrent_streams)
        return self.usable and len(self.sinks) < limit

    def open_stream(self, sink: StreamSink, headers: H2Headers, end: bool) -> int:
        """Start a request stream; returns its id (raises H2Error if the connection cannot)."""
        stream_id = self.conn.get_next_available_stream_id()
        self.sinks[stream_id] = sink
        self.send_headers(stream_id, headers, end)
        return stream_id

    def cancel(self, stream_id: int) -> None:
        """The exchange gave up on the stream (RST_STREAM CANCEL)."""
        if self.sinks.pop(stream_id, None) is not None:
            self.reset(stream_id, ErrorCodes.CANCEL)
            self._stream_gone()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.conn.close_connection()
                self.flush()
            except H2Error:
                pass
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _AlpnH2:
    """What `open_endpoint` reads from TlsMaterial, with the ALPN `h2` client context."""

    __slots__ = ("client_context",)

    def __init__(self, tls: TlsMaterial) -> None:
        self.client_context = tls.h2_client_context


class H2Pool:
    """Multiplexed HTTP/2 connections per (endpoint, TLS identity expectation)."""

    def __init__(self, tls: TlsMaterial | None, stats: Stats) -> None:
        self.tls = tls
        self.stats = stats
        self._conns: dict[PoolKey, list[H2Upstream]] = {}
        self._connecting: dict[PoolKey, asyncio.Future[H2Upstream]] = {}

    def ready(self, endpoint: EndpointSpec, cluster: ClusterSpec) -> H2Upstream | None:
        """A connection with room for one more stream (no await), if any."""
        conns = self._conns.get(pool_key(endpoint, cluster))
        if not conns:
            return None
        now = time.monotonic()
        idle_limit = cluster.idle_timeout_s
        for conn in list(conns):
            if (idle_limit is not None and not conn.sinks
                    and now - conn.idle_since > idle_limit):
                conns.remove(conn)
                conn.close()
                continue
            if conn.has_room():
                return conn
        return None

    async def acquire(self, endpoint: EndpointSpec, cluster: ClusterSpec,
                      timeout_s: float) -> tuple[H2Upstream, bool]:
        """(connection, reused). Concurrent callers share one connect per key.
        Raises ConnectFailure."""
        conn = self.ready(endpoint, cluster)
        if conn is not None:
            return conn, True
        key = pool_key(endpoint, cluster)
        pending = self._connecting.get(key)
        if pending is not None:
            try:
                conn = await asyncio.wait_for(asyncio.shield(pending), timeout_s)
            except TimeoutError:
                raise ConnectFailure("upstream_connect_failure",
                                     f"connect to {endpoint.address} timed out") from None
            if conn.has_room():
                return conn, True
        fut: asyncio.Future[H2Upstream] = asyncio.get_running_loop().create_future()
        self._connecting[key] = fut
        try:
            conn = await self._connect(endpoint, cluster, key, timeout_s)
        except ConnectFailure as failure:
            fut.set_exception(failure)
            fut.exception()  # retrieved: waiters re-raise their own copy
            raise
        finally:
            if self._connecting.get(key) is fut:
                del self._connecting[key]
        fut.set_result(conn)
        return conn, False

    async def _connect(self, endpoint: EndpointSpec, cluster: ClusterSpec, key: PoolKey,
                       timeout_s: float) -> H2Upstream:
        tls = cast(TlsMaterial, _AlpnH2(self.tls)) if self.tls is not None else None
        transport, conn, peer = await open_endpoint(
            lambda: H2Upstream(self, key, cluster.name, cluster.max_concurrent_streams),
            endpoint, cluster, tls, timeout_s)
        if cluster.tls is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn != "h2":
                transport.abort()
                raise ConnectFailure(
                    "upstream_protocol_error",
                    f"{endpoint.address} did not agree to HTTP/2 (ALPN {alpn or 'none'}); "
                    f"cluster {cluster.name} is configured for http2_protocol_options")
        conn.peer_identity = peer
        if not conn.closed:
            self._conns.setdefault(key, []).append(conn)
        return conn

    def forget(self, conn: H2Upstream) -> None:
        conns = self._conns.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._conns[conn.key]

    def connections(self) -> int:
        return sum(len(c) for c in self._conns.values())

    def close_all(self) -> None:
        for conns in list(self._conns.values()):
            for conn in list(conns):
                conn.abort()
        self._conns.clear()
