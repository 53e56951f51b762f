"""An HTTP/2 stream exchange's state and its synchronous half: downstream and upstream events.

`H2Exchange` (stream.py) adds the asynchronous half (route, policy, attempts). Upstream events
arrive synchronously: they commit the response (headers, DATA, trailers relayed with
per-chunk flow-control acknowledgements) or, before commit, end the attempt with RETRY when
`_retry_response` says so. Local replies take the gRPC form for gRPC requests.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import time
from functools import partial
from typing import Protocol

from h2.errors import ErrorCodes

from hyphal.proxy.h2 import grpc
from hyphal.proxy.h2.bridge import H1Stream
from hyphal.proxy.h2.endpoint import OnSent
from hyphal.proxy.h2.grpc import H2Headers
from hyphal.proxy.h2.headers import RequestHead, downstream_block
from hyphal.proxy.h2.upstream import H2Pool, H2Upstream
from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.http.headers import REASONS
from hyphal.proxy.runtime.tables import (
    ClusterSpec,
    ProxyConfig,
    RetryPolicy,
    Route,
    VirtualHost,
)
from hyphal.proxy.upstream.cluster import ClusterRuntime
from hyphal.telemetry import tracing
from hyphal.telemetry.accesslog import iso_time

log = logging.getLogger(__name__)

REPLAY_LIMIT = 65536


class Outcome(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    RESET = "reset"
    TIMEOUT = "timeout"
    BROKEN = "broken"  # failed after the response was committed


UpstreamStream = H2Upstream | H1Stream  # a multiplexed h2 connection, or HTTP/1.1 bridged


class Downstream(Protocol):
    peer_ip: str
    peer_identity: str | None
    port: int

    def send_headers(self, stream_id: int, headers: H2Headers, end: bool) -> None: ...
    def send_data(self, stream_id: int, data: bytes, end: bool,
                  on_sent: OnSent | None = None) -> None: ...
    def reset(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None: ...
    def ack(self, stream_id: int, size: int) -> None: ...
    def stream_done(self, stream_id: int) -> None: ...


def h2_pool(ctx: ListenerContext) -> H2Pool:
    pool = ctx.h2_pool
    if pool is None:  # a context built without one (tests): make it on first use
        pool = ctx.h2_pool = H2Pool(ctx.tls, ctx.stats)
    return pool


class H2Relay:
    """One request stream's state and events; `H2Exchange.run()` is its task."""

    def __init__(self, down: Downstream, ctx: ListenerContext, stream_id: int,
                 block: H2Headers, config: ProxyConfig, ended: bool,
                 default_authority: str = "") -> None:
        self.down = down
        self.ctx = ctx
        self.sid = stream_id
        self.config = config  # pinned for the whole exchange
        self.head = RequestHead.parse(block, default_authority)
        self.grpc = grpc.is_grpc(self.head.headers)
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.req_done = ended
        self.req_trailers: H2Headers | None = None
        self.kept: list[bytes] = []  # the whole body so far, while replayable
        self.kept_bytes = 0
        self.replayable = True
        self.waiting: list[tuple[bytes, int]] = []  # received, not yet sent upstream
        self.sent_once = False
        self.up: UpstreamStream | None = None
        self.up_sid = 0
        self.attempt: asyncio.Future[Outcome] | None = None
        self.refused = False
        self.committed = False
        self.resp_done = False
        self.down_ended = False
        self.resp_extra: H2Headers | None = None
        self.status = 0
        self.grpc_status: int | None = None
        self.reason = "-"
        self.request_id = b""
        self.bytes_in = 0
        self.bytes_out = 0
        self.route: Route | None = None
        self.vhost: VirtualHost | None = None
        self.spec: ClusterSpec | None = None
        self.policy: RetryPolicy | None = None
        self.retries_left = 0
        self.retry_held = False
        self.runtime: ClusterRuntime | None = None
        self.route_name = "-"
        self.cluster_name = "-"
        self.upstream_addr = "-"
        self.upstream_started = 0.0
        self.upstream_time_ms = -1.0
        self.task: asyncio.Task[None] | None = None
        self.span: tracing.ActiveSpan | None = None  # set only for sampled requests
        self.retry_after_s: float | None = None  # Retry-After / grpc-retry-pushback-ms
        self.deadline: float | None = None  # monotonic; route timeout and caller's budget

    # ---------------------------------------------------------------- downstream events
    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    def feed(self, data: bytes, flow: int) -> None:
        self.bytes_in += len(data)
        if self.replayable:
            self.kept.append(data)
            self.kept_bytes += len(data)
            if self.kept_bytes > REPLAY_LIMIT:
                self.replayable = False
                self.kept.clear()
        up = self.up
        if up is not None and self.attempt is not None:
            up.send_data(self.up_sid, data, False, partial(self.down.ack, self.sid, flow))
        else:
            self.waiting.append((data, flow))  # bounded: unacknowledged, so by the window

    def request_trailers(self, block: H2Headers) -> None:
        self.req_trailers = block

    def end_request(self) -> None:
        self.req_done = True
        up = self.up
        if up is not None and self.attempt is not None:
            self._end_upstream(up)

    def downstream_reset(self) -> None:
        self.reason = "downstream_disconnect" if not self.resp_done else self.reason
        self.down_ended = True
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    def _end_upstream(self, conn: UpstreamStream) -> None:
        if self.req_trailers is not None:
            conn.send_headers(self.up_sid, self.req_trailers, True)
        else:
            conn.send_data(self.up_sid, b"", True)

    def _settle(self, outcome: Outcome) -> None:
        fut = self.attempt
        if fut is not None and not fut.done():
            fut.set_result(outcome)

    def _on_timeout(self, fut: asyncio.Future[Outcome]) -> None:
        if fut.done():
            return
        conn, self.up = self.up, None
        if conn is not None:
            conn.cancel(self.up_sid)
        if self.committed:
            self.reason = "timeout"
            self._break("timeout")
            fut.set_result(Outcome.BROKEN)
        else:
            fut.set_result(Outcome.TIMEOUT)

    def _break(self, reason: str) -> None:
        """The response was committed and cannot complete: gRPC gets trailers saying why,
        anything else a reset stream."""
        if self.down_ended:
            return
        self.down_ended = True
        if self.grpc:
            trailers = grpc.deadline_trailers(reason) if reason == "timeout" else [
                (b"grpc-status", str(grpc.UNAVAILABLE).encode()),
                (b"grpc-message", f"hyphal: {reason}".encode()),
                (b"x-hyphal-reason", reason.encode())]
            self.grpc_status = grpc.status_of(trailers)
            self.down.send_headers(self.sid, trailers, True)
        else:
            self.down.reset(self.sid, ErrorCodes.INTERNAL_ERROR)

    # ---------------------------------------------------------------- upstream events
    def on_response(self, block: H2Headers, ended: bool) -> None:
        status = 0
        for name, value in block:
            if name == b":status":
                status = int(value)
                break
        if self.upstream_time_ms < 0:
            self.upstream_time_ms = (time.monotonic() - self.upstream_started) * 1000
        code = grpc.status_of(block) if ended else None
        if (not self.committed and self.retries_left > 0
                and self._retry_response(status, code, block)):
            conn, self.up = self.up, None
            if conn is not None:
                conn.cancel(self.up_sid)
            self.status, self.grpc_status = status, code
            self._settle(Outcome.RETRY)
            return
        self.committed = True
        self.status = status
        self.grpc_status = code
        self.reason = "-"
        self.down.send_headers(self.sid, downstream_block(block, self.route, self.vhost,
                                                          self.resp_extra), ended)
        if ended:
            self.down_ended = True

    def on_data(self, data: bytes, flow: int) -> None:
        up = self.up
        if up is None:
            return
        self.bytes_out += len(data)
        self.down.send_data(self.sid, data, False, partial(up.ack, self.up_sid, flow))

    def on_trailers(self, block: H2Headers) -> None:
        self.grpc_status = grpc.status_of(block)
        if not self.down_ended:
            self.down_ended = True
            self.down.send_headers(self.sid, [(n, v) for n, v in block if n[:1] != b":"], True)

    def on_end(self) -> None:
        if not self.down_ended:
            self.down_ended = True
            self.down.send_data(self.sid, b"", True)
        self.resp_done = True
        self.up = None
        self._settle(Outcome.DONE)

    def on_reset(self, refused: bool) -> None:
        self.up = None
        if self.committed:
            self.reason = "upstream_reset_after_response_started"
            self._break(self.reason)
            self._settle(Outcome.BROKEN)
            return
        self.refused = refused
        self._settle(Outcome.RESET)

    def _retry_response(self, status: int, code: int | None, block: H2Headers) -> bool:
        """Whether a response ends the attempt with RETRY (H2Exchange decides)."""
        return False

    async def run(self) -> None:
        raise NotImplementedError  # H2Exchange.run

    # ---------------------------------------------------------------- replies and the end
    def _local(self, status: int, reason: str, body: bytes | None = None,
               extra: H2Headers | None = None) -> None:
        """A response the proxy makes itself (gRPC form for gRPC requests)."""
        if self.committed or self.down_ended:
            return
        self.committed = True
        self.resp_done = True
        self.down_ended = True
        self.reason = reason
        if self.grpc:
            self.status = 200
            self.grpc_status = grpc.from_http(status)
            self.down.send_headers(self.sid, grpc.local_reply(status, reason,
                                                              self.request_id or None, extra),
                                   True)
            return
        self.status = status
        if body is None:
            body = f"{status} {REASONS.get(status, b'').decode()}: {reason}\n".encode()
        block: H2Headers = [(b":status", str(status).encode()),
                            (b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-hyphal-reason", reason.encode())]
        if self.request_id:
            block.append((b"x-request-id", self.request_id))
        if extra:
            block.extend(extra)
        self.bytes_out += len(body)
        self.down.send_headers(self.sid, block, not body)
        if body:
            self.down.send_data(self.sid, body, True)

    def _finish(self) -> None:
        conn, self.up = self.up, None
        if conn is not None:
            conn.cancel(self.up_sid)
        for _data, flow in self.waiting:
            self.down.ack(self.sid, flow)
        self.waiting.clear()
        if not self.down_ended:
            self.down_ended = True
            self.down.reset(self.sid, ErrorCodes.CANCEL)
        elif not self.req_done:
            self.down.reset(self.sid, ErrorCodes.NO_ERROR)  # answered; stop the upload
        ctx = self.ctx
        duration_ms = (time.monotonic() - self.started) * 1000
        labels = ctx.labels(self.config, self.spec, self.down.peer_identity)
        ctx.stats.record_request(labels, self.status, self.reason, duration_ms,
                                 "" if self.grpc_status is None else str(self.grpc_status))
        if ctx.access_log.enabled:
            entry: dict[str, object] = {
                "start_time": iso_time(self.started_wall),
                "request_id": self.request_id.decode("latin-1") or "-",
                "method": self.head.method,
                "authority": self.head.authority or "-",
                "path": self.head.path,
                "protocol": "HTTP/2",
                "downstream_peer": self.down.peer_ip,
                "downstream_identity": self.down.peer_identity or "-",
                "listener": ctx.spec.name,
                "route": self.route_name,
                "cluster": self.cluster_name,
                "upstream_host": self.upstream_addr,
                "status": self.status,
                "reason": self.reason,
                "bytes_received": self.bytes_in,
                "bytes_sent": self.bytes_out,
                "duration_ms": round(duration_ms, 3),
                "upstream_service_time_ms": round(self.upstream_time_ms, 3)
                if self.upstream_time_ms >= 0 else None,
            }
            if self.grpc:
                entry["grpc_status"] = self.grpc_status
            ctx.access_log.log(entry)
        if self.span is not None:
            self._end_span(self.span)
        self.down.stream_done(self.sid)

    def _end_span(self, span: tracing.ActiveSpan) -> None:
        attributes: list[tuple[str, str | int]] = [
            ("hyphal.workload", self.config.workload),
            ("hyphal.cluster", self.cluster_name),
            ("network.peer.address", self.upstream_addr),
            ("http.request_id", self.request_id.decode("latin-1")),
            ("network.protocol.version", "2"),
        ]
        if self.grpc:
            service, _, method = self.head.path.lstrip("/").partition("/")
            attributes += [("rpc.system", "grpc"), ("rpc.service", service),
                           ("rpc.method", method.partition("?")[0])]
            if self.grpc_status is not None:
                attributes.append(("rpc.grpc.status_code", self.grpc_status))
        tracing.TRACER.end(
            span, end_wall=time.time(), method=self.head.method, authority=self.head.authority,
            path=self.head.path, status=self.status, reason=self.reason,
            peer_identity=self.down.peer_identity, attributes=tuple(attributes))
