"""Transparent capture: the sidecar's `use_original_dst` listeners (virtualOutbound on 15001,
virtualInbound on 15006) and the `bind_to_port: false` listeners they hand connections to.

iptables REDIRECTs a workload's TCP to its sidecar (hyphal.kube.inject.iptables_rules); the
kernel keeps where each connection was really going (SO_ORIGINAL_DST). As in Envoy, each
accepted connection goes to the listener of the same direction whose address matches that
original destination — exactly (its `host:port` or one of its `additional_addresses`), then
by port on `0.0.0.0` — and otherwise stays on the capture listener's own filter chain (for
virtualOutbound: HTTP routed by Host/authority; for virtualInbound: a black hole). The
matched listener's logic runs unchanged: mTLS, request filters and RBAC for `inbound|<port>`,
the per-upstream TCP proxy for `outbound|<port>||<fqdn>`.

`pick` is the pure part; `CaptureServer` the accept loop (what hyphal.proxy.listeners uses
of `asyncio.Server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import replace

from hyphal.proxy.h2.detect import http_factory
from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.http.server import http1_factory
from hyphal.proxy.runtime.tables import ListenerSpec
from hyphal.proxy.tcp import TcpDownstream
from hyphal.proxy.transport.inspector import is_tls, peek_first_byte
from hyphal.proxy.transport.original_dst import original_dst

__all__ = ["CaptureServer", "UnboundServer", "pick", "serve"]

log = logging.getLogger(__name__)

WILDCARD = "0.0.0.0"
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def pick(listeners: Iterable[ListenerSpec], capture: ListenerSpec,
         dst: tuple[str, int] | None) -> ListenerSpec:
    """The listener that serves a connection captured by `capture` whose original
    destination was `dst` (None: not redirected): `capture` itself when nothing matches."""
    if dst is None:
        return capture
    wildcard: ListenerSpec | None = None
    for spec in listeners:
        if spec.bind_to_port or spec.is_inbound != capture.is_inbound:
            continue
        if (spec.host, spec.port) == dst or dst in spec.additional_addresses:
            return spec
        if wildcard is None and spec.host == WILDCARD and spec.port == dst[1]:
            wildcard = spec
    return wildcard or capture


class UnboundServer:
    """A `bind_to_port: false` listener: no socket; it only receives captured connections."""

    sockets: tuple[socket.socket, ...] = ()

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


class CaptureServer:
    """Accepts on `sock` (a `use_original_dst` listener) and dispatches each connection.

    Connections of every target share the capture listener's connection set, so its sweeper,
    drain and abort reach them; each target keeps its own ListenerContext (labels cache)."""

    def __init__(self, sock: socket.socket, ctx: ListenerContext, *,
                 sniff_timeout_s: float = 10.0, handshake_timeout_s: float = 5.0) -> None:
        self._sock = sock
        self._ctx = ctx
        self._sniff_timeout = sniff_timeout_s
        self._handshake_timeout = handshake_timeout_s
        self._targets: dict[str, ListenerContext] = {}
        self._accepting: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,) if self._sock.fileno() >= 0 else ()

    def start(self) -> None:
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    def _context(self, spec: ListenerSpec) -> ListenerContext:
        if spec.name == self._ctx.spec.name:
            return self._ctx
        found = self._targets.get(spec.name)
        if found is None:
            found = replace(self._ctx, spec=spec, _labels={})
            self._targets[spec.name] = found
        elif found.spec != spec:
            found.spec = spec
        return found

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:  # EMFILE and friends: back off briefly, keep serving
                log.warning("%s: accept failed: %s", self._ctx.spec.name, exc)
                await asyncio.sleep(0.05)
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._dispatch(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _dispatch(self, conn: socket.socket) -> None:
        try:
            dst = original_dst(conn)
        except OSError as exc:
            log.warning("%s: cannot read the original destination: %s", self._ctx.spec.name, exc)
            conn.close()
            return
        spec = pick(self._ctx.holder.current.listeners, self._ctx.spec, dst)
        ctx = self._context(spec)
        factory: ProtocolFactory
        ssl_ctx: ssl.SSLContext | None = None
        tls = spec.tls is not None
        if tls:
            if self._ctx.tls is None:
                log.warning("%s: no certificate yet; closing a captured connection for %s",
                            self._ctx.spec.name, spec.name)
                conn.close()
                return
            if spec.tls is not None and spec.tls.permissive:
                tls = is_tls(await peek_first_byte(conn, self._sniff_timeout))
            ssl_ctx = self._ctx.tls.server_context if tls else None
        if spec.is_http:
            factory = http_factory(ctx, http1_factory(ctx), tls)
        else:
            factory = lambda: TcpDownstream(ctx)  # noqa: E731
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                factory, conn, ssl=ssl_ctx,
                ssl_handshake_timeout=self._handshake_timeout if ssl_ctx else None)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.debug("%s: captured connection dropped during setup: %s", spec.name, exc)
            conn.close()

    def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        for task in list(self._pending):
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        for task in [t for t in (self._accepting, *self._pending) if t is not None]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def serve(ctx: ListenerContext, backlog: int = 1024) -> CaptureServer | UnboundServer:
    """Start serving `ctx.spec` (a capture listener, or an unbound one); raises OSError."""
    spec = ctx.spec
    if not spec.bind_to_port:
        return UnboundServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((spec.host, spec.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    server = CaptureServer(sock, ctx)
    server.start()
    return server
