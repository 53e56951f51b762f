"""Downstream HTTP/1.1 connection (asyncio Protocol): parsing, pipelining, timers, flow control.

Requests are answered strictly in order: the exchange at the head of the queue runs; later
pipelined requests wait with their (bounded) bodies. Reading pauses for three reasons
(pipeline depth, body buffer before an upstream exists, upstream write buffer full) and
resumes when none is left.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Protocol, cast

from hyphal.proxy.http.codec import (
    Body,
    MessageEnd,
    ParseError,
    RequestHead,
    RequestReader,
    Upgrade,
)
from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.http.exchange import Exchange
from hyphal.proxy.http.headers import local_response
from hyphal.proxy.http.readbuf import BufferedReads
from hyphal.proxy.http.relay import REPLAY_LIMIT, Relay
from hyphal.proxy.transport.tls import spiffe_id
from hyphal.proxy.upstream.pool import UpstreamConnection

_PIPELINE_DEPTH = 8
_REASON_FLAGS = {400: "bad_request", 408: "request_timeout", 414: "uri_too_long",
                 417: "expectation_failed", 431: "request_headers_too_large",
                 505: "http_version_not_supported"}

_IDLE, _HEAD, _BODY, _TUNNEL, _DONE = range(5)


class TimedTry(Protocol):
    def on_try_timeout(self) -> None: ...


def _whole_soon(head: RequestHead) -> bool:
    """No body, or a small Content-Length one (kept for replay anyway), and nothing the
    client waits for before sending it."""
    if head.chunked or head.upgrade or head.expect_continue:
        return False
    length = head.content_length
    return length is None or length <= REPLAY_LIMIT


class HttpDownstream(BufferedReads):
    __slots__ = (
        "_closed",
        "_head_since",
        "_idle_since",
        "_out",
        "_paused",
        "_pending_error",
        "_state",
        "_timer",
        "_timer_due",
        "_try_due",
        "_try_owner",
        "_write_paused",
        "ctx",
        "loop",
        "peer_identity",
        "peer_ip",
        "port",
        "queue",
        "reader",
        "reading",
        "transport",
    )

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx
        # Kept: asyncio.get_running_loop() costs a getpid() per call on CPython 3.11.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.reader = RequestReader(ctx.limits)
        self.queue: collections.deque[Exchange] = collections.deque()
        self.reading: Exchange | None = None
        self.peer_ip = "-"
        self.peer_identity: str | None = None
        self.port = ctx.spec.port
        self._out: list[bytes] = []
        self._paused: set[str] = set()
        self._write_paused = False
        self._state = _IDLE
        # Timers are timestamps checked by the listener's sweeper (no timer per request).
        self._head_since = 0.0
        self._idle_since = 0.0
        self._pending_error: bytes | None = None
        self._closed = False
        # The try timeout of the exchange in flight (see arm_try).
        self._try_owner: TimedTry | None = None
        self._try_due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0

    # ---------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = str(peer[0])
        if self.ctx.spec.tls is not None:
            self.peer_identity = spiffe_id(transport.get_extra_info("peercert"))
        self.ctx.connections.add(self)
        self.ctx.stats.count("hyphal_downstream_cx_total", self.ctx.spec.name)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _TUNNEL:
            if self.reading is not None:
                self.reading.tunnel_data(data)
            return
        if state == _DONE:
            return
        now = 0.0  # monotonic, read once per read when something needs it
        if state == _IDLE:
            self._state = _HEAD
            self._idle_since = 0.0
            self._head_since = now = time.monotonic()
        for event in self.reader.feed(data):
            cls = event.__class__
            if cls is Body:
                if self.reading is not None:
                    self.reading.feed_body(event.data)  # type: ignore[union-attr]
            elif cls is RequestHead:
                if not now:
                    now = time.monotonic()
                self._on_head(event, now)  # type: ignore[arg-type]
            elif cls is MessageEnd:
                reading = self.reading
                self._state = _IDLE
                keep_alive = event.keep_alive  # type: ignore[union-attr]
                if reading is not None:
                    reading.end_request(keep_alive)
                if not keep_alive:
                    self._state = _DONE
                    self.reading = None
                if (reading is not None and not reading.launched and self.queue
                        and self.queue[0] is reading):
                    reading.start()  # deferred by _on_head: the whole request is here
            elif isinstance(event, Upgrade):
                self._state = _TUNNEL
                if self.reading is None and self.queue:
                    self.reading = self.queue[-1]
                if self.reading is not None and event.rest:
                    self.reading.tunnel_data(event.rest)
            elif isinstance(event, ParseError):
                if self._state != _DONE:
                    self._on_parse_error(event)
                break
        if self._out:
            self.flush()

    def _on_head(self, head: RequestHead, now: float) -> None:
        self._head_since = 0.0
        self._state = _BODY
        ctx = self.ctx
        exchange = Exchange(self, ctx, head, ctx.holder.current, now)
        self.reading = exchange
        queue = self.queue
        queue.append(exchange)
        waiting = len(queue)
        if waiting == 1:
            # A request with no body or a small one starts when it is whole (its
            # MessageEnd), which lets the exchange take the fast path; others stream.
            if not _whole_soon(head):
                exchange.start()
        elif waiting >= _PIPELINE_DEPTH:
            self.pause_reading("pipeline")

    def _on_parse_error(self, event: ParseError) -> None:
        self._state = _DONE
        self._cancel_head()
        flag = _REASON_FLAGS.get(event.status, "bad_request")
        response = local_response(event.status, flag, close=True,
                                  body=f"{event.status} {flag}: {event.detail}\n".encode())
        self.ctx.stats.count("hyphal_downstream_rq_rejected", flag)
        reading = self.reading
        self.reading = None
        if reading is not None and reading.req_done:
            reading = None  # its request was whole: the error is the next request's
        if reading is not None and reading.task is not None:
            reading.request_error()  # it is running: it answers or closes
            return
        if reading is not None and reading in self.queue:
            self.queue.remove(reading)  # queued, never started: answer in its place
        if self.queue:
            self._pending_error = response
            return
        self.send(response)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_head()
        self._cancel_idle()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.ctx.connections.discard(self)
        queue = list(self.queue)
        for exchange in queue:
            exchange.downstream_lost()
        if queue and not queue[0].launched and not queue[0].ended:
            queue[0].abandoned()  # deferred, its request never completed: still logged
        self.queue.clear()
        self.reading = None

    def eof_received(self) -> bool | None:
        # A half-closed client still gets its answers (keep the write side open).
        if not self.queue:
            return None
        self._state = _DONE if self._state != _TUNNEL else _TUNNEL
        return True

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.queue:
            self.queue[0].down_pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.queue:
            self.queue[0].down_resume_writing()

    # ---------------------------------------------------------------- used by exchanges
    def send(self, data: bytes) -> None:
        self._out.append(data)

    def flush(self) -> None:
        out = self._out
        if out and self.transport is not None and not self._closed:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def pause_reading(self, reason: str) -> None:
        if not self._paused and self.transport is not None and not self._closed:
            self.transport.pause_reading()
        self._paused.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._paused:
            return
        self._paused.discard(reason)
        if not self._paused and self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def upstream_bound(self, conn: UpstreamConnection) -> None:
        """The exchange in flight writes to `conn` now: the rest of its body is no longer
        only buffered (read on), and `conn` is read only while we can write downstream."""
        if self._paused:
            self.resume_reading("buffer")
        if self._write_paused and conn.transport is not None:
            conn.transport.pause_reading()

    def exchange_done(self, exchange: Relay, keep_alive: bool, now: float = 0.0) -> None:
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        if self.reading is exchange and exchange.req_done:
            self.reading = None
        if self._out:
            self.flush()
        if not keep_alive or self._closed:
            self.close()
            return
        if self._paused:
            self.resume_reading("pipeline")
        if queue:
            queue[0].start()
            return
        if self._pending_error is not None:
            self.send(self._pending_error)
            self.close()
            return
        if self._state == _DONE:
            self.close()
        elif self._state == _IDLE:
            self._idle_since = now or time.monotonic()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.flush()
        self._state = _DONE
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def drain(self) -> None:
        """Close now if idle; otherwise the current exchange answers with Connection: close."""
        if not self.queue:
            self.close()

    # ---------------------------------------------------------------- try timeouts
    # One TimerHandle per connection instead of a call_later and a cancel per request
    # (~2.5 us under uvloop). At most one try is in flight per connection (the exchange at
    # the head of the queue runs), so a try that ends leaves the timer armed; when it
    # fires it re-arms for the try in flight then, if any, or lapses. A try due earlier
    # than the armed timer re-arms it. The due time is checked against time.monotonic()
    # when the timer fires, so a try never times out early by more than the loop's
    # millisecond clock.
    def arm_try(self, owner: TimedTry, due: float) -> None:
        """`owner.on_try_timeout()` at monotonic time `due` unless `disarm_try(owner)`."""
        self._try_owner = owner
        self._try_due = due
        timer = self._timer
        if timer is None or due < self._timer_due:
            if timer is not None:
                timer.cancel()
            self._timer_due = due
            self._timer = self.loop.call_later(max(due - time.monotonic(), 0.0),
                                               self._on_try_timer)

    def disarm_try(self, owner: TimedTry) -> None:
        if self._try_owner is owner:
            self._try_owner = None

    def _on_try_timer(self) -> None:
        self._timer = None
        owner = self._try_owner
        if owner is None:
            return
        due = self._try_due
        left = due - time.monotonic()
        if left > 0.001:  # a later try's, or the loop's ms clock ran early: not yet
            self._timer_due = due
            self._timer = self.loop.call_later(left, self._on_try_timer)
            return
        self._try_owner = None
        owner.on_try_timeout()

    # ---------------------------------------------------------------- timers
    def _arm_idle(self) -> None:
        self._idle_since = time.monotonic()

    def _cancel_idle(self) -> None:
        self._idle_since = 0.0

    def _cancel_head(self) -> None:
        self._head_since = 0.0

    def check_timers(self, now: float) -> None:
        """Called by the listener's sweeper a few times per second."""
        timeouts = self.ctx.timeouts
        if self._head_since and now - self._head_since >= timeouts.header_s:
            self._head_since = 0.0
            self._on_head_timeout()
        elif (self._idle_since and now - self._idle_since >= timeouts.idle_s
              and not self.queue and self._state == _IDLE):
            self._idle_since = 0.0
            self.close()

    def _on_head_timeout(self) -> None:
        if self._state != _HEAD:
            return
        self.ctx.stats.count("hyphal_downstream_rq_rejected", "request_timeout")
        if self.queue:
            self._pending_error = local_response(408, "request_timeout", close=True)
            self._state = _DONE
            return
        self.send(local_response(408, "request_timeout", close=True))
        self.close()


def http1_factory(ctx: ListenerContext) -> Callable[[], asyncio.Protocol]:
    """HttpDownstream's factory as `h2.detect.http_factory` types it. HttpDownstream is an
    asyncio BufferedProtocol (hyphal.proxy.http.readbuf) that also takes `data_received`,
    which is how detect hands it the bytes it already read."""
    return lambda: cast(asyncio.Protocol, HttpDownstream(ctx))
