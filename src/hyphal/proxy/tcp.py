"""TCP proxy (Envoy tcp_proxy): bytes both ways between a downstream and one cluster endpoint."""

from __future__ import annotations

import asyncio
from typing import cast
import logging
import time

from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.transport.tls import spiffe_id
from hyphal.proxy.upstream.pool import ConnectFailure, open_endpoint
from hyphal.telemetry.accesslog import iso_time

log = logging.getLogger(__name__)


class _TcpUpstream(asyncio.Protocol):
    __slots__ = ("down", "transport")

    def __init__(self, down: TcpDownstream) -> None:
        self.down = down
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.down.from_upstream(data)

    def eof_received(self) -> bool | None:
        down = self.down.transport
        if down is not None and down.can_write_eof():
            down.write_eof()
            return True
        self.down.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.upstream_lost()

    def pause_writing(self) -> None:
        if self.down.transport is not None:
            self.down.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.down.transport is not None:
            self.down.transport.resume_reading()


class TcpDownstream(asyncio.Protocol):
    """One proxied TCP connection. Inbound listeners apply network RBAC (principal, port)."""

    __slots__ = ("ctx", "transport", "up", "pending", "peer_ip", "peer_identity", "task",
                 "started", "started_wall", "bytes_in", "bytes_out", "reason", "cluster",
                 "upstream_addr", "closed")

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.up: _TcpUpstream | None = None
        self.pending: list[bytes] = []
        self.peer_ip = "-"
        self.peer_identity: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.bytes_in = 0
        self.bytes_out = 0
        self.reason = "-"
        self.cluster = ctx.spec.tcp_cluster or "-"
        self.upstream_addr = "-"
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = str(peer[0])
        if self.ctx.spec.tls is not None:
            self.peer_identity = spiffe_id(transport.get_extra_info("peercert"))
        self.ctx.connections.add(self)
        transport.pause_reading()
        self.task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        config = self.ctx.holder.current
        spec = self.ctx.spec
        if spec.rbac is not None:
            allowed, _ = spec.rbac.allowed(self.peer_identity, "", "", spec.port, {})
            if not allowed:
                self._fail("rbac_denied")
                return
        cluster = config.clusters.get(spec.tcp_cluster or "")
        if cluster is None:
            self._fail("cluster_not_found")
            return
        runtime = self.ctx.clusters.runtime(cluster)
        tried: set[str] = set()
        for _ in range(max(1, min(3, len(cluster.endpoints)))):
            endpoint = runtime.pick(frozenset(tried), None)
            if endpoint is None:
                self._fail("no_healthy_upstream")
                return
            tried.add(endpoint.address)
            self.upstream_addr = endpoint.address
            try:
                _, up, _peer = await open_endpoint(lambda: _TcpUpstream(self), endpoint, cluster,
                                                   self.ctx.tls, cluster.connect_timeout_s)
            except ConnectFailure as failure:
                runtime.connect_failed(endpoint.address)
                self.reason = failure.reason
                log.debug("tcp %s: %s", spec.name, failure.detail)
                continue
            if self.closed:
                if up.transport is not None:
                    up.transport.close()
                return
            self.up = up
            if self.pending and up.transport is not None:
                up.transport.write(b"".join(self.pending))
            self.pending.clear()
            if self.transport is not None:
                self.transport.resume_reading()
            return
        self._fail(self.reason if self.reason != "-" else "upstream_connect_failure")

    def _fail(self, reason: str) -> None:
        self.reason = reason
        self.close()

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.write(data)
        else:
            self.pending.append(data)

    def from_upstream(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.transport is not None:
            self.transport.write(data)

    def eof_received(self) -> bool | None:
        up = self.up
        if up is not None and up.transport is not None and up.transport.can_write_eof():
            up.transport.write_eof()
            return True
        if up is not None and up.transport is not None:
            up.transport.close()
        return None

    def upstream_lost(self) -> None:
        self.close()

    def pause_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def drain(self) -> None:
        """TCP has no request boundary: connections continue until either side closes."""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.ctx.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()
        ctx = self.ctx
        if ctx.access_log.enabled:
            ctx.access_log.log({
                "start_time": iso_time(self.started_wall),
                "protocol": "TCP",
                "downstream_peer": self.peer_ip,
                "downstream_identity": self.peer_identity or "-",
                "listener": ctx.spec.name,
                "cluster": self.cluster,
                "upstream_host": self.upstream_addr,
                "reason": self.reason,
                "bytes_received": self.bytes_in,
                "bytes_sent": self.bytes_out,
                "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
            })
        ctx.stats.count("hyphal_tcp_cx_total", ctx.spec.name)
        if self.reason != "-":
            ctx.stats.count("hyphal_tcp_cx_failed", self.reason)
