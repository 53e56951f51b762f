"""Downstream HTTP/2 connection (server side, asyncio Protocol): one H2Exchange per stream.

Made by `hyphal.proxy.h2.detect` when a plaintext connection opens with the h2c preface (or
a CONNECT tunnel carries one) and when TLS negotiated ALPN `h2`. `default_authority` is the
CONNECT target, used when a request carries no `:authority`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error

from hyphal.proxy.h2.endpoint import GracefulH2Connection, H2Endpoint
from hyphal.proxy.h2.grpc import H2Headers
from hyphal.proxy.h2.stream import H2Exchange
from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.transport.tls import spiffe_id

log = logging.getLogger(__name__)


class H2Downstream(H2Endpoint):
    def __init__(self, ctx: ListenerContext, default_authority: str = "") -> None:
        super().__init__(GracefulH2Connection(H2Configuration(client_side=False,
                                                              header_encoding=None)))
        self.ctx = ctx
        self.default_authority = default_authority
        self.streams: dict[int, H2Exchange] = {}
        self.peer_ip = "-"
        self.peer_identity: str | None = None
        self.port = ctx.spec.port
        self._idle_since = time.monotonic()
        self._draining = False

    # ---------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)
        peer = t.get_extra_info("peername")
        if peer:
            self.peer_ip = str(peer[0])
        if self.ctx.spec.tls is not None:
            self.peer_identity = spiffe_id(t.get_extra_info("peercert"))
        self.ctx.connections.add(self)
        self.ctx.stats.count("hyphal_downstream_cx_total", self.ctx.spec.name)
        self.conn.initiate_connection()
        self.start(t)
        if self.ctx.draining:
            self.drain()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except H2Error as exc:
            log.info("listener %s: client %s broke HTTP/2 (%s); closing", self.ctx.spec.name,
                     self.peer_ip, exc)
            self.ctx.stats.count("hyphal_downstream_rq_rejected", "bad_request")
            self.flush()
            self.close()
            return
        for event in events:
            if isinstance(event, DataReceived):
                exchange = self.streams.get(event.stream_id)
                if exchange is not None:
                    exchange.feed(event.data, event.flow_controlled_length)
                else:
                    self.ack(event.stream_id, event.flow_controlled_length)
            elif isinstance(event, RequestReceived):
                self._on_request(event.stream_id, event.headers,
                                 event.stream_ended is not None)
            elif isinstance(event, StreamEnded):
                exchange = self.streams.get(event.stream_id)
                if exchange is not None:
                    exchange.end_request()
            elif isinstance(event, TrailersReceived):
                exchange = self.streams.get(event.stream_id)
                if exchange is not None:
                    exchange.request_trailers(event.headers)
            elif isinstance(event, StreamReset):
                self.forget_stream(event.stream_id)
                exchange = self.streams.get(event.stream_id)
                if exchange is not None:
                    exchange.downstream_reset()
            elif isinstance(event, WindowUpdated):
                if event.stream_id:
                    self._pump(event.stream_id)
                else:
                    self.pump_all()
            elif isinstance(event, ConnectionTerminated):
                # The client is going away: its streams in flight still get their answers.
                self._draining = True
                if not self.streams:
                    self.close()
        self.flush()

    def _on_request(self, stream_id: int, headers: H2Headers, ended: bool) -> None:
        if self._draining:
            self.reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self._idle_since = 0.0
        exchange = H2Exchange(self, self.ctx, stream_id, headers, self.ctx.holder.current,
                              ended, self.default_authority)
        self.streams[stream_id] = exchange
        exchange.start()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ctx.connections.discard(self)
        self.forget_all()
        for exchange in list(self.streams.values()):
            exchange.downstream_reset()

    # ---------------------------------------------------------------- used by exchanges
    def stream_done(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if not self.streams:
            self._idle_since = time.monotonic()
            if self._draining:
                self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.conn.close_connection()
            data = self.conn.data_to_send()
            if data and self.transport is not None:
                self.transport.write(data)
        except H2Error:
            pass
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def drain(self) -> None:
        """GOAWAY first, naming the last stream that will be served (the client opens no
        new streams here and retries later ones elsewhere); streams that still arrive are
        refused (REFUSED_STREAM); the streams in flight finish, then the connection closes."""
        if self._draining or self.closed:
            return
        self._draining = True
        try:
            conn = cast(GracefulH2Connection, self.conn)
            conn.goaway(conn.highest_inbound_stream_id)
        except H2Error:
            pass
        self.flush()
        if not self.streams:
            self.close()

    def check_timers(self, now: float) -> None:
        """Called by the listener's sweeper: an idle connection closes after `idle_s`."""
        if (self._idle_since and not self.streams
                and now - self._idle_since >= self.ctx.timeouts.idle_s):
            self.close()
