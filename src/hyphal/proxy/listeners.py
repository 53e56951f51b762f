"""Listening sockets of the sidecar: bind one ListenerSpec, track its connections, drain it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from hyphal.proxy import capture
from hyphal.proxy.h2.detect import http_factory
from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.http.server import http1_factory
from hyphal.proxy.runtime.tables import ListenerSpec
from hyphal.proxy.tcp import TcpDownstream
from hyphal.proxy.transport import inspector


class ListenerBindError(Exception):
    """A listener could not be bound (the message names the listener and address)."""


def needs_rebind(old: ListenerSpec, new: ListenerSpec) -> bool:
    """Only the socket-level fields need a new socket; routes, RBAC etc. apply in place."""
    return (old.host, old.port, old.kind, old.tls, old.bind_to_port, old.use_original_dst) != (
        new.host, new.port, new.kind, new.tls, new.bind_to_port, new.use_original_dst)


@dataclass(slots=True)
class Listener:
    ctx: ListenerContext
    server: asyncio.Server
    sweeper: asyncio.TimerHandle | None = None

    def start_sweeper(self) -> None:
        """One periodic check of every connection's header and idle deadlines."""
        timeouts = self.ctx.timeouts
        tick = min(max(min(timeouts.header_s, timeouts.idle_s) / 4, 0.05), 1.0)
        loop = asyncio.get_running_loop()

        def sweep() -> None:
            now = time.monotonic()
            for conn in list(self.ctx.connections):
                # HTTP/1.1, HTTP/2 and still-sniffing connections have deadlines, TCP not.
                # (Duck-typed: H2Downstream is imported only once a connection speaks h2.)
                check = getattr(conn, "check_timers", None)
                if check is not None:
                    check(now)
            self.sweeper = loop.call_later(tick, sweep)

        self.sweeper = loop.call_later(tick, sweep)

    @property
    def port(self) -> int:
        sockets = self.server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else self.ctx.spec.port

    async def stop_accepting(self) -> None:
        self.server.close()

    def stop_sweeper(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None

    def drain(self) -> None:
        self.ctx.draining = True
        for conn in list(self.ctx.connections):
            drain = getattr(conn, "drain", None)  # every kind of downstream connection
            if drain is not None:
                drain()

    def abort_all(self) -> None:
        for conn in list(self.ctx.connections):
            transport = getattr(conn, "transport", None)
            if transport is not None:
                transport.abort()


async def bind(ctx: ListenerContext) -> Listener:
    spec = ctx.spec
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.BaseProtocol]
    if spec.is_http:
        # HTTP/2 (h2c preface, CONNECT tunnels, ALPN h2) or HTTP/1.1: hyphal.proxy.h2.detect
        factory = http_factory(ctx, http1_factory(ctx), spec.tls is not None)
    else:
        factory = lambda: TcpDownstream(ctx)  # noqa: E731
    ssl_ctx = None
    captured = spec.use_original_dst or not spec.bind_to_port  # hyphal.proxy.capture
    if spec.tls is not None and not captured:
        if ctx.tls is None:
            raise ListenerBindError(
                f"listener {spec.name}: needs TLS but the data plane has no certificate yet")
        ssl_ctx = ctx.tls.server_context
    try:
        if captured:  # dispatched by original destination, TLS chosen per target
            server = cast(asyncio.Server, await capture.serve(ctx))
        elif ssl_ctx is not None and spec.tls is not None and spec.tls.permissive:
            # PERMISSIVE: mTLS or plaintext on one port, by the first byte (tls_inspector)
            plain = http_factory(ctx, http1_factory(ctx), False) if spec.is_http \
                else factory
            server = cast(asyncio.Server, await inspector.serve(
                spec.host, spec.port, factory, plain, ssl_ctx))
        else:
            server = await loop.create_server(
                factory, spec.host, spec.port, ssl=ssl_ctx, reuse_address=True, backlog=1024,
                ssl_handshake_timeout=5.0 if ssl_ctx else None, family=socket.AF_INET)
    except OSError as exc:
        raise ListenerBindError(
            f"listener {spec.name}: cannot bind {spec.host}:{spec.port}: {exc.strerror or exc}; "
            "is another process using the port?") from exc
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener = Listener(ctx, server)
    listener.start_sweeper()
    return listener
