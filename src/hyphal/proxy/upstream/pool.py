"""Upstream HTTP/1.1 connections (asyncio Protocol) and their per-endpoint keep-alive pool."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Protocol, TypeVar, cast

from hyphal.proxy.http.codec import (
    Body,
    MessageEnd,
    ParseError,
    ResponseHead,
    ResponseReader,
    Upgrade,
)
from hyphal.proxy.http.readbuf import BufferedReads
from hyphal.proxy.runtime.tables import ClusterSpec, EndpointSpec, UpstreamTls
from hyphal.proxy.transport.tls import TlsMaterial, spiffe_id
from hyphal.telemetry.stats import Stats


class ConnectFailure(Exception):
    """Connecting to an endpoint failed; `reason` is the x-hyphal-reason flag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class UpstreamSink(Protocol):
    """What an in-flight exchange receives from its upstream connection."""

    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self, keep_alive: bool) -> None: ...
    def on_upstream_upgrade(self, rest: bytes) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def on_upstream_error(self, detail: str) -> None: ...
    def on_upstream_lost(self) -> None: ...
    def on_upstream_flush(self) -> None: ...
    def upstream_pause_writing(self) -> None: ...
    def upstream_resume_writing(self) -> None: ...


PoolKey = tuple[str, int, str | None, frozenset[str]]
P = TypeVar("P", bound=asyncio.BaseProtocol)


def pool_key(endpoint: EndpointSpec, cluster: ClusterSpec) -> PoolKey:
    tls = cluster.tls
    if tls is None:
        return (endpoint.host, endpoint.port, None, frozenset())
    return (endpoint.host, endpoint.port, tls.sni, tls.expected_sans)


async def open_endpoint(
    factory: Callable[[], P],
    endpoint: EndpointSpec,
    cluster: ClusterSpec,
    tls: TlsMaterial | None,
    timeout_s: float,
) -> tuple[asyncio.Transport, P, str | None]:
    """Connect (over mTLS when the cluster says so) and check the peer's SPIFFE id against
    the cluster's expected SANs. Returns (transport, protocol, peer identity).
    Raises ConnectFailure with reason upstream_connect_failure, upstream_tls_failure or
    upstream_identity_mismatch."""
    loop = asyncio.get_running_loop()
    ssl_ctx: ssl.SSLContext | None = None
    server_hostname: str | None = None
    if cluster.tls is not None:
        if tls is None:
            raise ConnectFailure("upstream_tls_failure",
                                 f"cluster {cluster.name}: mTLS required but no certificate yet")
        ssl_ctx = tls.client_context
        server_hostname = cluster.tls.sni or None
    try:
        async with asyncio.timeout(timeout_s):
            try:
                transport, proto = await loop.create_connection(
                    factory, endpoint.host, endpoint.port, ssl=ssl_ctx,
                    server_hostname=server_hostname)
            except (UnicodeError, ValueError):
                # An SNI that is not a valid host name (Envoy allows them): send none.
                transport, proto = await loop.create_connection(
                    factory, endpoint.host, endpoint.port, ssl=ssl_ctx, server_hostname="")
    except TimeoutError:
        raise ConnectFailure(
            "upstream_connect_failure",
            f"connect to {endpoint.address} timed out after {timeout_s:.3g}s") from None
    except ssl.SSLError as exc:
        raise ConnectFailure(
            "upstream_tls_failure",
            f"TLS handshake with {endpoint.address} failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise ConnectFailure(
            "upstream_connect_failure",
            f"connect to {endpoint.address} failed: {exc.strerror or exc}") from None
    peer: str | None = None
    if cluster.tls is not None:
        peer = spiffe_id(transport.get_extra_info("peercert"))
        expected = cluster.tls.expected_sans
        if expected and peer not in expected:
            transport.abort()
            raise ConnectFailure(
                "upstream_identity_mismatch",
                f"{endpoint.address} presented identity {peer or 'none'}; cluster "
                f"{cluster.name} expects one of {sorted(expected)}")
    return transport, proto, peer


class UpstreamConnection(BufferedReads):
    __slots__ = (
        "closed",
        "cluster",
        "idle_since",
        "key",
        "peer_identity",
        "pool",
        "reader",
        "requests",
        "sink",
        "transport",
        "tunnel",
    )

    def __init__(self, pool: ConnectionPool, key: PoolKey, cluster: str) -> None:
        self.pool = pool
        self.key = key
        self.cluster = cluster
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.sink: UpstreamSink | None = None
        self.requests = 0
        self.idle_since = 0.0
        self.closed = False
        self.tunnel = False
        self.peer_identity: str | None = None

    # asyncio callbacks ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.pool.stats.gauge_add("hyphal_upstream_cx_active", self.cluster, 1)
        self.pool.stats.count("hyphal_upstream_cx_total", self.cluster)

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if self.tunnel:
            if sink is not None:
                sink.on_tunnel_data(data)
            return
        if sink is None:
            # Bytes on an idle connection: the server broke framing; never reuse it.
            self.close()
            return
        for event in self.reader.feed(data):
            cls = event.__class__
            if cls is Body:
                sink.on_response_body(event.data)  # type: ignore[union-attr]
            elif cls is ResponseHead:
                sink.on_response_head(event)  # type: ignore[arg-type]
            elif cls is MessageEnd:
                sink.on_response_end(event.keep_alive  # type: ignore[union-attr]
                                     and not self.reader.stale)
            elif cls is Upgrade:
                self.tunnel = True
                sink.on_upstream_upgrade(event.rest)  # type: ignore[union-attr]
            elif cls is ParseError:
                sink.on_upstream_error(event.detail)  # type: ignore[union-attr]
                self.close()
                break
            if self.sink is not sink:
                # Released (or released and already lent to the next request, which the
                # exchange's end may start at once): nothing more here is its business.
                return
        sink.on_upstream_flush()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
        self.pool.stats.gauge_add("hyphal_upstream_cx_active", self.cluster, -1)
        self.pool.forget(self)
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.on_upstream_lost()

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_resume_writing()

    # used by the exchange ---------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def begin(self, sink: UpstreamSink, head_request: bool) -> None:
        self.sink = sink
        self.requests += 1
        if head_request:
            self.reader.expect_head()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sink = None
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.sink = None
        if self.transport is not None:
            self.transport.abort()


class ClusterWaiters(dict[str, list["asyncio.Future[None]"]]):
    """Requests waiting, per cluster, for a connection (or an HTTP/2 stream) to come free:
    the pending requests of the circuit breakers. A plain dict underneath, so `if waiters:`
    costs nothing on the request path when nobody waits."""

    async def wait(self, cluster: str, timeout_s: float) -> bool:
        """Until `wake(cluster)` (True) or `timeout_s` (False)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self.setdefault(cluster, [])
        waiters.append(fut)
        try:
            await asyncio.wait_for(fut, max(timeout_s, 0.0))
            return True
        except TimeoutError:
            return False
        finally:
            if fut in waiters:
                waiters.remove(fut)

    def wake(self, cluster: str) -> None:
        waiters = self.get(cluster)
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            waiters.clear()


class Http2Bridge(Protocol):
    """Carries HTTP/1.1 exchanges to clusters with `http2` set over HTTP/2 streams
    (`hyphal.proxy.h2.bridge.H2Bridge`): the same calls as the pool's, per cluster."""

    def idle_connection(self, endpoint: EndpointSpec,
                        cluster: ClusterSpec) -> UpstreamConnection | None: ...
    async def acquire(self, endpoint: EndpointSpec, cluster: ClusterSpec,
                      timeout_s: float) -> tuple[UpstreamConnection, bool]: ...
    def connections(self, cluster: str) -> int: ...
    async def wait_for_connection(self, cluster: str, timeout_s: float) -> bool: ...


class ConnectionPool:
    """Idle keep-alive connections per (endpoint, TLS identity expectation). Clusters with
    `http2` set go through `h2` (protocol bridging) when the data plane wired one."""

    __slots__ = ("_all", "_idle", "_lists", "_per_cluster", "_waiters", "h2", "stats", "tls")

    def __init__(self, tls: TlsMaterial | None, stats: Stats) -> None:
        # Idle connections per key, most recently used last (taken first: its peer is the
        # least likely to have closed it).
        self._idle: dict[PoolKey, list[UpstreamConnection]] = {}
        # The idle list of pool_key(endpoint, cluster) per endpoint object (config snapshots
        # are immutable), checked by identity: the request path finds it without building
        # and hashing a key. Lists in _idle are only ever emptied in place, never replaced
        # (close_idle clears both).
        self._lists: dict[int, tuple[EndpointSpec, UpstreamTls | None,
                                     list[UpstreamConnection]]] = {}
        self._all: set[UpstreamConnection] = set()
        self.tls = tls
        self.stats = stats
        # Open connections per cluster (circuit breakers' max_connections) and the requests
        # waiting for one of them to come free (http1MaxPendingRequests).
        self._per_cluster: dict[str, int] = {}
        self._waiters = ClusterWaiters()
        self.h2: Http2Bridge | None = None

    def connections(self, cluster: str) -> int:
        """Connections of `cluster` open now (busy or idle)."""
        count = self._per_cluster.get(cluster, 0)
        return count if self.h2 is None else count + self.h2.connections(cluster)

    async def wait_for_connection(self, cluster: str, timeout_s: float) -> bool:
        """Wait until a connection of `cluster` goes idle or closes (False: timed out)."""
        if self.h2 is not None and self.h2.connections(cluster):
            return await self.h2.wait_for_connection(cluster, timeout_s)
        return await self._waiters.wait(cluster, timeout_s)

    def _idle_list(self, endpoint: EndpointSpec,
                   cluster: ClusterSpec) -> list[UpstreamConnection]:
        """The idle list of pool_key(endpoint, cluster), remembered per endpoint object."""
        tls = cluster.tls
        key = pool_key(endpoint, cluster)
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        if len(self._lists) > 4096:
            self._lists.clear()
        self._lists[id(endpoint)] = (endpoint, tls, idle)
        return idle

    def idle_connection(self, endpoint: EndpointSpec, cluster: ClusterSpec,
                        now: float | None = None) -> UpstreamConnection | None:
        """A pooled keep-alive connection to the endpoint, if one is usable (no await).
        `now`: the caller's monotonic time, when it has just read it."""
        found = self._lists.get(id(endpoint))
        if found is not None and found[0] is endpoint and found[1] is cluster.tls:
            idle = found[2]
        else:
            idle = self._idle_list(endpoint, cluster)
        if not idle:
            if cluster.http2 and self.h2 is not None:
                return self.h2.idle_connection(endpoint, cluster)
            return None
        if now is None:
            now = time.monotonic()
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if (conn.closed or transport is None or transport.is_closing()
                    or (cluster.idle_timeout_s is not None
                        and now - conn.idle_since > cluster.idle_timeout_s)):
                conn.close()
                continue
            return conn
        return None

    async def acquire(self, endpoint: EndpointSpec, cluster: ClusterSpec,
                      timeout_s: float) -> tuple[UpstreamConnection, bool]:
        """Returns (connection, reused). Raises ConnectFailure."""
        conn = self.idle_connection(endpoint, cluster)
        if conn is not None:
            return conn, True
        if cluster.http2 and self.h2 is not None:
            return await self.h2.acquire(endpoint, cluster, timeout_s)
        key = pool_key(endpoint, cluster)
        return await self._connect(endpoint, cluster, key, timeout_s), False

    async def _connect(self, endpoint: EndpointSpec, cluster: ClusterSpec, key: PoolKey,
                       timeout_s: float) -> UpstreamConnection:
        _transport, conn, peer = await open_endpoint(
            lambda: UpstreamConnection(self, key, cluster.name), endpoint, cluster, self.tls,
            timeout_s)
        conn.peer_identity = peer
        if not conn.closed:
            self._all.add(conn)
            self._per_cluster[cluster.name] = self._per_cluster.get(cluster.name, 0) + 1
        return conn

    def release(self, conn: UpstreamConnection, reusable: bool, max_requests: int | None,
                now: float | None = None) -> None:
        conn.sink = None
        if (not reusable or conn.closed or conn.tunnel
                or (max_requests is not None and conn.requests >= max_requests)):
            conn.close()
            return
        conn.idle_since = time.monotonic() if now is None else now
        idle = self._idle.get(conn.key)
        if idle is None:
            self._idle[conn.key] = [conn]
        else:
            idle.append(conn)
        if self._waiters:
            self._waiters.wake(conn.cluster)

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self._all:
            self._all.discard(conn)
            left = self._per_cluster.get(conn.cluster, 1) - 1
            if left > 0:
                self._per_cluster[conn.cluster] = left
            else:
                self._per_cluster.pop(conn.cluster, None)
            if self._waiters:
                self._waiters.wake(conn.cluster)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close_one_idle(self, cluster: str) -> bool:
        """Close one idle connection of `cluster` to make room under max_connections for a
        connection to another endpoint (False: none is idle)."""
        for idle in self._idle.values():
            for conn in idle:
                if conn.cluster == cluster:
                    idle.remove(conn)
                    conn.close()
                    self.forget(conn)
                    return True
        return False

    def close_idle(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._lists.clear()

    def close_all(self) -> None:
        self.close_idle()
        for conn in list(self._all):
            conn.abort()
