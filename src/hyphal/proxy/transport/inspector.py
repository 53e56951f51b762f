"""TLS inspector (Envoy's `tls_inspector`) for PERMISSIVE inbound listeners: one port that
takes mTLS and plaintext, told apart by the first byte a client sends (0x16 starts a TLS
handshake record).

asyncio cannot hand bytes it has already read to a TLS layer, so the first byte is peeked
(`MSG_PEEK`) on the accepted socket before any transport owns it; the socket then goes to
`connect_accepted_socket` with or without the server SSL context. `InspectingServer` offers
what the listener code uses of `asyncio.Server` (`sockets`, `close`, `wait_closed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

__all__ = ["TLS_HANDSHAKE", "InspectingServer", "is_tls", "peek_first_byte"]

log = logging.getLogger(__name__)

TLS_HANDSHAKE = 0x16
ProtocolFactory = Callable[[], asyncio.Protocol]


def is_tls(first: bytes) -> bool:
    """Whether a connection's first bytes start a TLS handshake record."""
    return bool(first) and first[0] == TLS_HANDSHAKE


async def peek_first_byte(conn: socket.socket, timeout_s: float) -> bytes:
    """The first byte a client sends on non-blocking `conn` (left in the socket), b"" if
    none within `timeout_s` or the socket failed."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await asyncio.wait_for(readable, timeout_s)
        return conn.recv(1, socket.MSG_PEEK)
    except (TimeoutError, OSError):
        return b""
    finally:
        loop.remove_reader(fd)


class InspectingServer:
    """Accepts on `sock`; each connection goes to `tls_factory` over TLS or to
    `plain_factory` in plaintext. A client silent for `sniff_timeout_s` is closed."""

    def __init__(self, sock: socket.socket, tls_factory: ProtocolFactory,
                 plain_factory: ProtocolFactory, ssl_context: ssl.SSLContext, *,
                 sniff_timeout_s: float = 10.0, handshake_timeout_s: float = 5.0) -> None:
        self._sock = sock
        self._tls_factory = tls_factory
        self._plain_factory = plain_factory
        self._ssl = ssl_context
        self._sniff_timeout = sniff_timeout_s
        self._handshake_timeout = handshake_timeout_s
        self._accepting: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,) if self._sock.fileno() >= 0 else ()

    def start(self) -> None:
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:  # EMFILE and friends: back off briefly, keep serving
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.05)
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._dispatch(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _dispatch(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        first = await peek_first_byte(conn, self._sniff_timeout)
        if not first:
            conn.close()
            return
        try:
            if is_tls(first):
                await loop.connect_accepted_socket(
                    self._tls_factory, conn, ssl=self._ssl,
                    ssl_handshake_timeout=self._handshake_timeout)
            else:
                await loop.connect_accepted_socket(self._plain_factory, conn)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.debug("inbound connection dropped during setup: %s", exc)
            conn.close()

    def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        for task in list(self._pending):
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        tasks = [t for t in (self._accepting, *self._pending) if t is not None]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def serve(host: str, port: int, tls_factory: ProtocolFactory,
                plain_factory: ProtocolFactory, ssl_context: ssl.SSLContext,
                backlog: int = 1024) -> InspectingServer:
    """Bind `host:port` (raises OSError) and start accepting."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    server = InspectingServer(sock, tls_factory, plain_factory, ssl_context)
    server.start()
    return server
