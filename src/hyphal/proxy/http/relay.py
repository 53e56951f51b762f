"""An exchange's state and its synchronous half: server-facing API and upstream callbacks.

`Exchange` (exchange.py) adds the asynchronous half (route, policy, attempts). Upstream
callbacks either commit the response (head written downstream, body streamed) or, for a
retriable status before commit, end the attempt with RETRY.
"""


from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import TYPE_CHECKING, Protocol

from hyphal.proxy.http.codec import RequestHead, ResponseHead
from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.http.headers import (
    HOP_BY_HOP,
    LAST_CHUNK,
    Headers,
    apply_transforms,
    cut_lines,
    encode_chunk,
    local_response,
    names_only_hop_by_hop,
    strip_hop_by_hop,
    tokens_of,
)
from hyphal.proxy.runtime.tables import (
    ClusterSpec,
    EndpointSpec,
    ProxyConfig,
    RetryPolicy,
    Route,
    VirtualHost,
)
from hyphal.proxy.upstream.cluster import ClusterRuntime
from hyphal.proxy.upstream.pool import UpstreamConnection

if TYPE_CHECKING:
    from hyphal.proxy.router import Target
    from hyphal.telemetry import tracing

log = logging.getLogger(__name__)

# Response headers not copied downstream as they came (framing is re-added).
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}

REPLAY_LIMIT = 65536
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Downstream(Protocol):
    peer_ip: str
    peer_identity: str | None
    port: int
    loop: asyncio.AbstractEventLoop

    def send(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def pause_reading(self, reason: str) -> None: ...
    def resume_reading(self, reason: str) -> None: ...
    def upstream_bound(self, conn: UpstreamConnection) -> None: ...
    def exchange_done(self, exchange: Relay, keep_alive: bool, now: float = 0.0) -> None: ...
    def abort(self) -> None: ...
    def arm_try(self, owner: Relay, due: float) -> None: ...
    def disarm_try(self, owner: Relay) -> None: ...


class Outcome(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    RESET = "reset"
    TIMEOUT = "timeout"
    BROKEN = "broken"  # failed after the response was committed


# The members as module constants, which the exchange compares against: on CPython 3.11 every
# `Outcome.X` read goes through EnumType.__getattr__ (~200 ns; a global is ~16 ns).
DONE, RETRY, RESET, TIMEOUT, BROKEN = (Outcome.DONE, Outcome.RETRY, Outcome.RESET,
                                       Outcome.TIMEOUT, Outcome.BROKEN)


class Relay:
    """All of an exchange's state (Attempts and Exchange add behaviour, no fields): one
    `__init__` for the object the hot path builds per request, no `super()` chain."""

    __slots__ = (
        "admitted",
        "attempt",
        "authority",
        "bytes_in",
        "bytes_out",
        "chunk_bytes",
        "chunks",
        "close_after",
        "cluster_name",
        "committed",
        "config",
        "ctx",
        "deadline",
        "down",
        "ended",
        "fast",
        "fast_endpoint",
        "grpc",
        "head",
        "launched",
        "malformed",
        "path",
        "policy",
        "reason",
        "replayable",
        "req_done",
        "req_keep_alive",
        "request_id",
        "resp_done",
        "resp_extra",
        "resp_mode",
        "retries_left",
        "retry_after_s",
        "retry_held",
        "retry_refused",
        "route",
        "route_name",
        "running",
        "runtime",
        "skip_informational",
        "span",
        "spec",
        "started",
        "started_wall",
        "status",
        "target",
        "task",
        "tunnel_pending",
        "tunneling",
        "up",
        "up_head",
        "up_source",
        "up_until_close",
        "upstream_addr",
        "upstream_started",
        "upstream_time_ms",
        "vhost",
    )

    def __init__(self, down: Downstream, ctx: ListenerContext, head: RequestHead,
                 config: ProxyConfig, now: float) -> None:
        self.down = down
        self.ctx = ctx
        self.head = head
        self.config = config  # pinned for the whole exchange
        self.started = now  # monotonic, when the head was read
        self.started_wall = time.time()
        self.request_id = b""
        self.chunks: list[bytes] = []
        self.chunk_bytes = 0
        self.replayable = True
        self.req_done = False
        self.req_keep_alive = head.keep_alive
        self.up: UpstreamConnection | None = None
        self.attempt: asyncio.Future[Outcome] | None = None
        self.committed = False
        self.resp_done = False
        self.resp_extra: Headers | None = None  # added to the response (Set-Cookie of hashing)
        self.status = 0
        self.reason = "-"
        self.bytes_in = 0
        self.bytes_out = 0
        self.route_name = "-"
        self.cluster_name = "-"
        self.upstream_addr = "-"
        self.resp_mode = "length"
        self.up_until_close = False
        self.skip_informational = False
        self.tunnel_pending: list[bytes] | None = None  # client bytes before the upstream's 101
        self.tunneling = False
        self.close_after = False
        self.task: asyncio.Task[None] | None = None
        self.authority = ""
        self.path = ""
        self.ended = False
        self.malformed = False
        self.running = False
        self.launched = False  # start() ran (a task or the fast path)
        self.fast = False  # an attempt driven by callbacks alone is in flight (no task)
        # What `_route` and `_plan` decided (Exchange): both paths read them from here.
        self.target: Target | None = None
        self.route: Route | None = None
        self.vhost: VirtualHost | None = None
        self.spec: ClusterSpec | None = None
        self.runtime: ClusterRuntime | None = None
        self.up_head = b""  # the upstream request head, before the per-try deadline header
        self.up_source = head  # what it was built from (the deadline headers still in it)
        self.deadline: float | None = None  # monotonic; route timeout and caller's budget
        self.grpc = False
        self.admitted = False  # holds a cluster admission (breaker max_requests)
        self.span: tracing.ActiveSpan | None = None  # set only for sampled requests
        # Tries (Attempts).
        self.policy: RetryPolicy | None = None
        self.retries_left = 0
        self.retry_after_s: float | None = None
        self.retry_held = False  # a breaker max_retries unit is held by the current try
        self.retry_refused = ""  # why a wanted retry did not happen (budget, breaker)
        self.fast_endpoint: EndpointSpec | None = None  # the fast path's try went there
        self.upstream_started = 0.0
        self.upstream_time_ms = -1.0

    def start(self) -> None:
        self.launched = True
        self.task = self.down.loop.create_task(self.run())

    def feed_body(self, data: bytes) -> None:
        self.bytes_in += len(data)
        up = self.up
        if up is not None and (self.attempt is not None or self.fast):
            up.write(encode_chunk(data) if self.head.chunked else data)
            if self.replayable:
                self.chunks.append(data)
                self.chunk_bytes += len(data)
                if self.chunk_bytes > REPLAY_LIMIT:
                    self.replayable = False
                    self.chunks.clear()
            return
        self.chunks.append(data)
        self.chunk_bytes += len(data)
        if self.chunk_bytes > REPLAY_LIMIT:
            self.replayable = False
            self.down.pause_reading("buffer")

    def end_request(self, keep_alive: bool) -> None:
        self.req_done = True
        self.req_keep_alive = keep_alive and self.req_keep_alive
        up = self.up
        if up is not None and (self.attempt is not None or self.fast) and self.head.chunked:
            up.write(LAST_CHUNK)

    def request_error(self) -> None:
        """The request body turned out malformed: answer 400 if nothing was sent yet."""
        self.malformed = True
        self.close_after = True
        # A task that has not run yet sees `malformed` first thing; one that is waiting on
        # the upstream is cancelled and answers from its handler.
        if self.running and self.task is not None and not self.task.done():
            self.task.cancel()

    def tunnel_data(self, data: bytes) -> None:
        if self.tunneling and self.up is not None:
            self.up.write(data)
        elif self.tunnel_pending is None:
            self.tunnel_pending = [data]
        else:
            self.tunnel_pending.append(data)

    def downstream_lost(self) -> None:
        self.close_after = True
        if self.fast:
            self._fast_cancelled()
            return
        if self.running and self.task is not None and not self.task.done():
            self.task.cancel()
        if self.tunneling and self.up is not None:
            self.up.close()

    def abandoned(self) -> None:
        """The connection closed before this (never started) request was whole."""
        self.close_after = True
        self.launched = True
        self.reason = "downstream_disconnect"
        self._finish()

    def down_pause_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()

    def down_resume_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.resume_reading()

    def _retry_status(self, head: ResponseHead) -> bool:
        """Whether this response status ends the attempt with RETRY (Exchange decides)."""
        return False

    def _settle(self, outcome: Outcome) -> None:
        fut = self.attempt
        if fut is not None:
            if not fut.done():
                fut.set_result(outcome)
        elif self.fast:
            self._fast_settled(outcome)

    def _fast_settled(self, outcome: Outcome, now: float | None = None) -> None:
        """The fast path's attempt ended (Exchange: finish, or hand over to a task)."""

    def _fast_cancelled(self) -> None:
        """The client left during a fast-path attempt (Exchange)."""

    def on_try_timeout(self) -> None:
        """The try in flight took too long (Attempts; armed with `down.arm_try`)."""

    def on_response_head(self, head: ResponseHead) -> None:
        status = head.status
        if self.upstream_time_ms < 0:
            self.upstream_time_ms = (time.monotonic() - self.upstream_started) * 1000
        if 100 <= status < 200 and status != 101:
            self.skip_informational = True
            return
        if self.retries_left > 0 and self._retry_status(head):
            conn = self.up
            self.up = None
            if conn is not None:
                conn.close()
            self.status = status
            self._settle(RETRY)
            return
        self._commit(head)

    def _commit(self, head: ResponseHead) -> None:
        self.committed = True
        status = head.status
        self.status = status
        self.reason = "-"
        route = self.route
        vhost = self.vhost
        if ((route is not None and (route.response_headers_to_add
                                    or route.response_headers_to_remove))
                or (vhost is not None and (vhost.response_headers_to_add
                                           or vhost.response_headers_to_remove))):
            headers = strip_hop_by_hop(head.headers, keep_upgrade=status == 101)
            if route is not None:
                headers = apply_transforms(headers, route.response_headers_to_remove,
                                           route.response_headers_to_add)
            if vhost is not None:
                headers = apply_transforms(headers, vhost.response_headers_to_remove,
                                           vhost.response_headers_to_add)
        else:
            headers = None
        req = self.head
        raw = head.raw
        if (headers is None and raw is not None and not raw[2] and raw[5] >= 0
                and head.connection is None and raw[1] is head.headers
                and 200 <= status != 204 and status != 304 and req.method != b"HEAD"
                and not req.upgrade and not self.resp_extra):
            # Hot path (most responses): a Content-Length response with no hop-by-hop
            # header goes on with its header lines as received, Content-Length among them;
            # the same head as below builds (bar the lines' spacing and order).
            self.up_until_close = False
            self.resp_mode = "length"
            if not self.req_keep_alive or self.close_after or self.ctx.draining:
                self.close_after = True
                end = b"Connection: close\r\n\r\n"
            else:
                end = b"\r\n" if req.version == b"1.1" else b"Connection: keep-alive\r\n\r\n"
            self.down.send(b"HTTP/%s %d %s\r\n%s%s" % (
                b"1.1" if req.version == b"1.1" else b"1.0", status, head.reason, raw[0], end))
            return
        version = b"1.1" if req.version == b"1.1" else b"1.0"
        parts = [b"HTTP/", version, b" %d " % status, head.reason, b"\r\n"]
        length_kept = False  # the upstream's Content-Length line is among those copied
        if (headers is None and raw is not None and raw[1] is head.headers
                and status != 101 and names_only_hop_by_hop(head.connection)):
            # Hot path: the header lines as received minus the hop-by-hop ones (usually
            # none: the block as it is); Content-Length stays where it was, except on a 204.
            block, _, drop, _, _, cl_at = raw
            if status == 204 and cl_at >= 0:
                drop = sorted((*drop, cl_at))
            else:
                length_kept = cl_at >= 0
            parts.append(cut_lines(block, drop) if drop else block)
        elif headers is None:
            listed = tokens_of(head.connection)
            for name, value in head.headers:
                lower = name.lower()
                if ((lower in _RESPONSE_DROP or lower in listed)
                        and (status != 101 or lower != b"upgrade")):
                    continue
                parts += (name, b": ", value, b"\r\n")
        else:
            for name, value in headers:
                parts += (name, b": ", value, b"\r\n")
        if self.resp_extra:
            for name, value in self.resp_extra:
                parts += (name, b": ", value, b"\r\n")
        self.up_until_close = not head.chunked and head.content_length is None
        if req.upgrade and status != 101:
            self.close_after = True  # the client's bytes after its Upgrade are not HTTP
        if status == 101:
            parts.append(b"Connection: Upgrade\r\n")
            self.resp_mode = "none"
            self.up_until_close = False
        elif req.method == b"HEAD" or status in (204, 304):
            if head.content_length is not None and status != 204 and not length_kept:
                parts.append(b"Content-Length: %d\r\n" % head.content_length)
            self.resp_mode = "none"
            self.up_until_close = False
        elif head.content_length is not None:
            if not length_kept:
                parts.append(b"Content-Length: %d\r\n" % head.content_length)
            self.resp_mode = "length"
        elif req.version == b"1.1":
            parts.append(b"Transfer-Encoding: chunked\r\n")
            self.resp_mode = "chunked"
        else:
            self.resp_mode = "close"
            self.close_after = True
        if not self.req_keep_alive or self.close_after or self.ctx.draining:
            parts.append(b"Connection: close\r\n\r\n")
            self.close_after = True
        elif req.version == b"1.0":
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self.down.send(b"".join(parts))

    def on_response_body(self, data: bytes) -> None:
        if not self.committed or self.skip_informational:
            return
        self.bytes_out += len(data)
        if self.resp_mode == "chunked":
            self.down.send(encode_chunk(data))
        else:
            self.down.send(data)

    def on_response_end(self, keep_alive: bool) -> None:
        if self.skip_informational:
            self.skip_informational = False
            return
        if not self.committed or self.status == 101:
            return
        if self.resp_mode == "chunked":
            self.down.send(LAST_CHUNK)
        self.resp_done = True
        conn = self.up
        self.up = None
        now = time.monotonic()
        if conn is not None:
            spec = self.spec
            self.ctx.pool.release(conn, keep_alive and self.req_done,
                                  spec.max_requests_per_connection if spec else None, now)
        if self.fast:
            self._fast_settled(DONE, now)  # the hot path ends here
        else:
            self._settle(DONE)

    def on_upstream_upgrade(self, rest: bytes) -> None:
        if self.status != 101:
            # Upgrade without 101: nothing sensible can follow on this connection.
            self.on_upstream_lost()
            return
        self.tunneling = True
        self.down.disarm_try(self)  # a tunnel has no try timeout
        if rest:
            self.down.send(rest)
        if self.up is not None and self.tunnel_pending:
            for chunk in self.tunnel_pending:
                self.up.write(chunk)
        self.tunnel_pending = None
        self.close_after = True

    def on_tunnel_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.down.send(data)
        self.down.flush()

    def on_upstream_error(self, detail: str) -> None:
        log.debug("upstream %s sent a malformed response: %s", self.upstream_addr, detail)
        conn = self.up
        self.up = None
        if conn is not None:
            conn.abort()
        self._settle(BROKEN if self.committed else RESET)

    def on_upstream_lost(self) -> None:
        self.up = None
        if self.tunneling:
            self.resp_done = True
            self._settle(DONE)
            return
        if self.committed and not self.resp_done:
            if self.up_until_close or self.resp_mode == "close":
                if self.resp_mode == "chunked":
                    self.down.send(LAST_CHUNK)
                self.resp_done = True
                self._settle(DONE)
                return
            self._settle(BROKEN)
            return
        self._settle(RESET)

    def on_upstream_flush(self) -> None:
        self.down.flush()

    def upstream_pause_writing(self) -> None:
        self.down.pause_reading("upstream")

    def upstream_resume_writing(self) -> None:
        self.down.resume_reading("upstream")

    def _local(self, status: int, flag: str, body: bytes | None = None,
               extra: Headers | None = None) -> None:
        if self.committed:
            return
        self.committed = True
        self.resp_done = True
        self.status = status
        self.reason = flag
        if not self.req_done or not self.req_keep_alive or self.ctx.draining:
            self.close_after = True
        if self.head.upgrade:
            self.close_after = True
        data = local_response(status, flag, self.request_id or None, close=self.close_after,
                              body=body, extra=extra, head_only=self.head.method == b"HEAD")
        self.bytes_out += len(data)
        self.down.send(data)
        self.down.flush()

    def _finish(self, now: float | None = None) -> None:
        """Account for the exchange (stats, access log) and hand the connection back to the
        server. `now`: the caller's monotonic time, when it has just read it."""
        if now is None:
            now = time.monotonic()
        conn = self.up
        self.up = None
        if conn is not None:
            conn.abort()
        if not self.resp_done:
            self.close_after = True
            if self.reason == "-":
                self.reason = "downstream_disconnect"
        ctx = self.ctx
        duration_ms = (now - self.started) * 1000
        cluster = self.spec
        labels = ctx.labels(self.config, cluster, self.down.peer_identity)
        ctx.stats.record_request(labels, self.status, self.reason, duration_ms)
        if ctx.access_log.enabled:
            head = self.head
            ctx.access_log.http(
                self.started_wall, self.request_id, head.method,
                self.authority or (head.host or b"-").decode("latin-1"),
                self.path or head.target.decode("latin-1", "replace"), head.version,
                self.down.peer_ip, self.down.peer_identity, ctx.spec.name, self.route_name,
                self.cluster_name, self.upstream_addr, self.status, self.reason,
                self.bytes_in, self.bytes_out, duration_ms, self.upstream_time_ms)
        self.ended = True
        if not self.req_done:
            self.close_after = True  # the rest of the request body has nowhere to go
        self.down.exchange_done(self, self.req_keep_alive and not self.close_after, now)

    async def run(self) -> None:
        raise NotImplementedError  # Exchange.run
