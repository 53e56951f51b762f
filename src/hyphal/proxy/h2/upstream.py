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
import random
import time
from typing import Protocol, cast

from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    PingAckReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error

from hyphal.proxy.h2.endpoint import GracefulH2Connection, H2Endpoint
from hyphal.proxy.h2.grpc import H2Headers
from hyphal.proxy.runtime.tables import ClusterSpec, EndpointSpec, H2Keepalive
from hyphal.proxy.transport.tls import TlsMaterial
from hyphal.proxy.upstream.pool import (
    ClusterWaiters,
    ConnectFailure,
    PoolKey,
    open_endpoint,
    pool_key,
)
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

    def __init__(self, pool: H2Pool, key: PoolKey, cluster: ClusterSpec) -> None:
        super().__init__(GracefulH2Connection(H2Configuration(client_side=True,
                                                              header_encoding=None)))
        self.pool = pool
        self.key = key
        self.cluster = cluster.name
        self.max_streams = cluster.max_concurrent_streams
        self.idle_timeout_s = cluster.idle_timeout_s
        self.keepalive: H2Keepalive | None = cluster.h2_keepalive
        self.sinks: dict[int, StreamSink] = {}
        self.going_away = False
        self.idle_since = time.monotonic()
        self.peer_identity: str | None = None
        self.counted = False  # in the pool's per-cluster count (max_connections)
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_deadline: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.initiate_connection()
        self.start(transport)
        self.pool.stats.gauge_add("hyphal_upstream_cx_active", self.cluster, 1)
        self.pool.stats.count("hyphal_upstream_cx_total", self.cluster)
        self._schedule_ping()

    # ---------------------------------------------------------------- keepalive (PING)
    def _schedule_ping(self) -> None:
        keepalive = self.keepalive
        if keepalive is None or self.closed:
            return
        delay = keepalive.interval_s * (1 + self.pool.rng.random() * keepalive.jitter)
        self._ping_timer = asyncio.get_running_loop().call_later(delay, self._ping)

    def _ping(self) -> None:
        """Envoy's connection_keepalive: a PING each interval; silence for `timeout_s`
        after it (no frame at all: any frame proves the peer alive) closes the connection."""
        self._ping_timer = None
        keepalive = self.keepalive
        if keepalive is None or self.closed:
            return
        if self._ping_deadline is None:
            try:
                self.conn.ping(self.pool.rng.randbytes(8))
            except H2Error:
                return
            self.flush()
            self._ping_deadline = asyncio.get_running_loop().call_later(
                keepalive.timeout_s, self._ping_timed_out)
        self._schedule_ping()

    def _ping_timed_out(self) -> None:
        self._ping_deadline = None
        if self.closed:
            return
        log.info("cluster %s: upstream %s:%s did not answer a keepalive PING; closing",
                 self.cluster, self.key[0], self.key[1])
        self.pool.stats.count("hyphal_upstream_cx_keepalive_timeout", self.cluster)
        self.abort()

    def _stop_timers(self) -> None:
        for timer in (self._ping_timer, self._ping_deadline):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._ping_deadline = None

    def data_received(self, data: bytes) -> None:
        if self._ping_deadline is not None:
            self._ping_deadline.cancel()
            self._ping_deadline = None
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
            elif isinstance(event, InformationalResponseReceived | PingAckReceived):
                continue
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timers()
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
        self.pool.wake(self.cluster)

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
            self._stop_timers()
            try:
                self.conn.close_connection()
                self.flush()
            except H2Error:
                pass
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self._stop_timers()
        if self.transport is not None:
            self.transport.abort()


class _AlpnH2:
    """What `open_endpoint` reads from TlsMaterial, with the ALPN `h2` client context."""

    __slots__ = ("client_context",)

    def __init__(self, tls: TlsMaterial) -> None:
        self.client_context = tls.h2_client_context


class H2Pool:
    """Multiplexed HTTP/2 connections per (endpoint, TLS identity expectation).

    Open connections are counted per cluster for the breakers' max_connections (a request
    that finds every connection full and no room for another waits as a pending request:
    `wait_for_room`). An idle sweep, running while any connection is open, closes those with
    no stream for longer than the cluster's idle_timeout (not only when a request looks).
    """

    def __init__(self, tls: TlsMaterial | None, stats: Stats,
                 rng: random.Random | None = None) -> None:
        self.tls = tls
        self.stats = stats
        self.rng = rng if rng is not None else random.Random()
        self._conns: dict[PoolKey, list[H2Upstream]] = {}
        self._connecting: dict[PoolKey, asyncio.Future[H2Upstream]] = {}
        self._per_cluster: dict[str, int] = {}
        self._waiters = ClusterWaiters()
        self._sweeper: asyncio.TimerHandle | None = None

    def ready(self, endpoint: EndpointSpec, cluster: ClusterSpec) -> H2Upstream | None:
        """A connection with room for one more stream (no await), if any."""
        conns = self._conns.get(pool_key(endpoint, cluster))
        if not conns:
            return None
        for conn in conns:
            if conn.has_room():
                return conn
        return None

    async def acquire(self, endpoint: EndpointSpec, cluster: ClusterSpec,
                      timeout_s: float) -> tuple[H2Upstream, bool]:
        """(connection, reused). Concurrent callers share one connect per key, so the
        connection may already be full when a sharer gets it: check `has_room()`.
        Raises ConnectFailure."""
        conn = self.ready(endpoint, cluster)
        if conn is not None:
            return conn, True
        key = pool_key(endpoint, cluster)
        pending = self._connecting.get(key)
        if pending is not None:
            try:
                return await asyncio.wait_for(asyncio.shield(pending), timeout_s), True
            except TimeoutError:
                raise ConnectFailure("upstream_connect_failure",
                                     f"connect to {endpoint.address} timed out") from None
        fut: asyncio.Future[H2Upstream] = asyncio.get_running_loop().create_future()
        self._connecting[key] = fut
        name = cluster.name
        self._per_cluster[name] = self._per_cluster.get(name, 0) + 1  # counts while connecting
        try:
            conn = await self._connect(endpoint, cluster, key, timeout_s)
        except BaseException as failure:
            self._uncount(name)
            if isinstance(failure, ConnectFailure):
                fut.set_exception(failure)
                fut.exception()  # retrieved: waiters re-raise their own copy
            else:
                fut.cancel()
            raise
        finally:
            if self._connecting.get(key) is fut:
                del self._connecting[key]
        fut.set_result(conn)
        self.wake(name)  # pending requests: a connection with room
        return conn, False

    async def _connect(self, endpoint: EndpointSpec, cluster: ClusterSpec, key: PoolKey,
                       timeout_s: float) -> H2Upstream:
        tls = cast(TlsMaterial, _AlpnH2(self.tls)) if self.tls is not None else None
        transport, conn, peer = await open_endpoint(
            lambda: H2Upstream(self, key, cluster), endpoint, cluster, tls, timeout_s)
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
        if conn.closed:
            raise ConnectFailure("upstream_connect_failure",
                                 f"{endpoint.address} closed the connection at once")
        self._conns.setdefault(key, []).append(conn)
        conn.counted = True
        self._start_sweeper()
        return conn

    def forget(self, conn: H2Upstream) -> None:
        conns = self._conns.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._conns[conn.key]
        if conn.counted:
            conn.counted = False
            self._uncount(conn.cluster)
            self.wake(conn.cluster)

    def _uncount(self, cluster: str) -> None:
        left = self._per_cluster.get(cluster, 1) - 1
        if left > 0:
            self._per_cluster[cluster] = left
        else:
            self._per_cluster.pop(cluster, None)

    # ---------------------------------------------------------------- breakers
    def connections(self, cluster: str) -> int:
        """Open (not going-away) connections of `cluster`: what max_connections limits."""
        return self._per_cluster.get(cluster, 0)

    def close_one_idle(self, cluster: str) -> bool:
        """Close a connection of `cluster` with no stream, to make room under
        max_connections for one to another endpoint (False: none is idle)."""
        for conns in self._conns.values():
            for conn in conns:
                if conn.cluster == cluster and not conn.sinks:
                    self.forget(conn)
                    conn.close()
                    return True
        return False

    async def wait_for_room(self, cluster: str, timeout_s: float) -> bool:
        """Wait until a stream of `cluster` ends, one of its connections closes or a new one
        is up (False: timed out)."""
        return await self._waiters.wait(cluster, timeout_s)

    def wake(self, cluster: str) -> None:
        if self._waiters:
            self._waiters.wake(cluster)

    # ---------------------------------------------------------------- idle sweep
    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._tick(), self.sweep)

    def _tick(self) -> float:
        limits = [c.idle_timeout_s for conns in self._conns.values() for c in conns
                  if c.idle_timeout_s is not None]
        return min(max(min(limits) / 4, 0.05), 1.0) if limits else 1.0

    def sweep(self, now: float | None = None) -> None:
        """Close connections idle past their cluster's idle_timeout; reschedule while any
        connection is open."""
        self._sweeper = None
        now = time.monotonic() if now is None else now
        for conns in list(self._conns.values()):
            for conn in list(conns):
                limit = conn.idle_timeout_s
                if limit is not None and not conn.sinks and now - conn.idle_since > limit:
                    self.forget(conn)
                    conn.close()
        if self._conns:
            self._start_sweeper()

    def connections_total(self) -> int:
        return sum(len(c) for c in self._conns.values())

    def close_all(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in list(self._conns.values()):
            for conn in list(conns):
                conn.abort()
        self._conns.clear()
        self._per_cluster.clear()
