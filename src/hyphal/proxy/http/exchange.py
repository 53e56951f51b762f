"""One request/response exchange through the proxy: route, policy, upstream attempts, relay.

Theory of operation: the server creates an Exchange per request head and feeds it body
events; `run()` (one task) decides the route, applies RBAC and faults, then makes upstream
attempts. Within an attempt everything is driven synchronously by upstream callbacks
(`on_response_*`), which either commit the response (head written downstream, body
streamed) or, for a retriable status before commit, end the attempt with RETRY. The task
only waits for the attempt's outcome, the backoff and the timeouts. Request bodies up to
REPLAY_LIMIT are kept so an attempt can be replayed; larger bodies disable retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from hyphal.proxy.filters.fault import decide as decide_fault
from hyphal.proxy.http.codec import RequestHead, ResponseHead
from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.http.headers import LAST_CHUNK, encode_chunk, header_map
from hyphal.proxy.http.relay import CONTINUE, Downstream, Outcome, Relay
from hyphal.proxy.http.request import redirect_location, upstream_request_head
from hyphal.proxy.resilience.backoff import Backoff, FailureKind
from hyphal.proxy.router import Target, parse_target, select_route
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
    DirectResponse,
    EndpointSpec,
    LbPolicy,
    ProxyConfig,
    RedirectAction,
    Route,
    VirtualHost,
    WeightedCluster,
)
from hyphal.proxy.upstream.cluster import ClusterRuntime
from hyphal.proxy.upstream.policy import (
    caller_budget,
    effective_deadline,
    request_hash_key,
    retry_after,
    shadow_authority,
    with_deadline,
)
from hyphal.proxy.upstream.pool import ConnectFailure, UpstreamConnection
from hyphal.telemetry import tracing

__all__ = ["Downstream", "Exchange"]

log = logging.getLogger(__name__)

_HASHING = frozenset({LbPolicy.RING_HASH, LbPolicy.MAGLEV})


class Exchange(Relay):
    """One request/response exchange; `run()` is its task."""

    __slots__ = ("deadline", "retry_after_s", "retry_held", "retry_refused", "span")

    def __init__(self, down: Downstream, ctx: ListenerContext, head: RequestHead,
                 config: ProxyConfig) -> None:
        super().__init__(down, ctx, head, config)
        self.deadline: float | None = None  # monotonic; route timeout and caller's budget
        self.retry_after_s: float | None = None
        self.retry_held = False  # a breaker max_retries unit is held by the current try
        self.retry_refused = ""  # why a wanted retry did not happen (budget, breaker)
        self.span: tracing.ActiveSpan | None = None  # set only for sampled requests

    async def run(self) -> None:
        self.running = True
        try:
            if self.malformed:
                self._local(400, "bad_request")
                return
            if self.close_after:
                return  # the client went away before we started
            await self._run()
        except asyncio.CancelledError:
            if self.malformed and not self.committed:
                self._local(400, "bad_request")
            self.close_after = True
        except Exception:  # a bug must cost one request, not the connection set
            log.exception("exchange failed: %s %s", self.head.method, self.head.target)
            if not self.committed:
                self._local(500, "internal_error")
            self.close_after = True
        finally:
            self._finish()
            if self.span is not None:
                self._end_span(self.span)

    def _end_span(self, span: tracing.ActiveSpan) -> None:
        tracing.TRACER.end(
            span, end_wall=time.time(), method=self.head.method.decode("latin-1"),
            authority=self.authority, path=self.path, status=self.status, reason=self.reason,
            peer_identity=self.down.peer_identity, attributes=(
                ("hyphal.workload", self.config.workload),
                ("hyphal.cluster", self.cluster_name),
                ("network.peer.address", self.upstream_addr),
                ("http.request_id", self.request_id.decode("latin-1")),
            ))

    async def _run(self) -> None:
        head = self.head
        ctx = self.ctx
        config = self.config
        if tracing.TRACER.enabled:
            self.span = tracing.TRACER.begin(head.headers, ctx.spec.is_inbound,
                                             self.started_wall)
        target = parse_target(head.target, head.host)
        method = head.method.decode("latin-1")
        if target is None:
            self._local(400, "bad_request_target")
            return
        self.authority = target.authority
        self.path = target.origin
        table = config.route_table_for(ctx.spec)
        if table is None:
            self._local(404, "no_route")
            return
        rbac = ctx.spec.rbac
        headers = None
        if table.needs_headers or rbac is not None:
            headers = header_map(head.headers)
            headers[":method"] = method
            headers[":path"] = target.origin
            headers[":authority"] = target.authority
        vhost, route = select_route(table, target, method, headers)
        if route is None or vhost is None:
            self._local(404, "no_route")
            return
        self.route = route
        self.vhost = vhost
        self.route_name = route.name
        if rbac is not None:
            allowed, _policy = rbac.allowed(self.down.peer_identity, method, target.path,
                                            self.down.port, headers or {})
            if not allowed:
                self._local(403, "rbac_denied")
                return
        action = route.action
        if isinstance(action, DirectResponse):
            self._local(action.status, "direct_response", body=action.body)
            return
        if isinstance(action, RedirectAction):
            self._redirect(action, target)
            return
        if route.fault is not None and not ctx.spec.is_inbound:
            fault = decide_fault(route.fault, ctx.rng)
            if fault.delay_s is not None:
                await asyncio.sleep(fault.delay_s)
            if fault.abort_status is not None:
                self._local(fault.abort_status, "fault_injected")
                return
        assert isinstance(action, ClusterAction)
        picked = action.pick(ctx.rng.randrange(action.total))
        spec = config.clusters.get(picked.name)
        self.cluster_name = picked.name
        if spec is None:
            self._local(503, "cluster_not_found")
            return
        self.spec = spec
        budget = caller_budget(head.headers)
        now = time.monotonic()
        if budget.remaining_s is not None and budget.remaining_s <= 0:
            self._local(504, "deadline_exceeded")  # the caller has already given up
            return
        runtime = ctx.clusters.runtime(spec)
        self.runtime = runtime
        refusal = runtime.admit(now)
        if refusal is not None:
            self._local(503, refusal)
            return
        try:
            up_source = head if budget.headers is None else replace(head, headers=budget.headers)
            if self.span is not None:  # sampled: the next hop's parent is this span
                up_source = replace(up_source, headers=self.span.inject(up_source.headers))
            self.request_id, up_head = upstream_request_head(
                up_source, target, vhost, route, picked, peer_ip=self.down.peer_ip,
                peer_identity=self.down.peer_identity, own_identity=config.identity,
                inbound=ctx.spec.is_inbound, downstream_tls=ctx.spec.tls is not None)
            if head.expect_continue and not self.req_done:
                self.down.send(CONTINUE)
                self.down.flush()
            deadline = effective_deadline(self.started, route.timeout_s, budget.remaining_s)
            self.deadline = deadline
            try:
                await self._forward(runtime, spec, route, vhost, up_head, target, deadline,
                                    budget.grpc)
            finally:
                if route.mirrors and not ctx.spec.is_inbound:
                    self._mirror(route, vhost, up_source, target, config, deadline)
        finally:
            runtime.release()

    # ---------------------------------------------------------------- forwarding
    async def _forward(self, runtime: ClusterRuntime, spec: ClusterSpec, route: Route,
                       vhost: VirtualHost, up_head: bytes, target: Target,
                       deadline: float | None, grpc: bool) -> None:
        """Tries until one commits a response: pick, connect (breakers), attempt, and on a
        retriable outcome back off and retry elsewhere while policy and budget allow."""
        policy = route.retry or vhost.retry
        self.policy = policy
        self.retries_left = policy.num_retries if policy else 0
        backoff = runtime.backoff(policy)
        hash_key: bytes | None = None
        if route.hash_policy and spec.lb in _HASHING:
            key = request_hash_key(route.hash_policy, self.head.headers, target.query,
                                   self.down.peer_ip, self.ctx.rng)
            hash_key = key.key
            if key.set_cookie is not None:
                self.resp_extra = [(b"set-cookie", key.set_cookie.encode("latin-1"))]
        tried: set[str] = set()
        backoff_round = 0
        stale_retry_used = False
        last_reason = "no_healthy_upstream"
        self.retry_after_s = None
        while True:
            now = time.monotonic()
            if deadline is not None and deadline - now <= 0:
                self._local(504, "timeout")
                return
            endpoint = runtime.pick(tried, hash_key, now)
            if endpoint is None:
                self._local(503, "no_healthy_upstream" if not tried else last_reason)
                return
            tried.add(endpoint.address)
            self.upstream_addr = endpoint.address
            remaining = None if deadline is None else deadline - now
            connect_timeout = spec.connect_timeout_s if remaining is None else min(
                spec.connect_timeout_s, remaining)
            try:
                # Pooled connection first, without an await (the common case).
                pooled = self.ctx.pool.idle_connection(endpoint, spec)
                if pooled is not None:
                    conn, reused = pooled, True
                else:
                    got = await self._connection(runtime, endpoint, spec, connect_timeout)
                    if got is None:
                        return  # answered (pending overflow or timeout)
                    conn, reused = got
            except ConnectFailure as failure:
                runtime.record(endpoint.address, FailureKind.CONNECT_FAILURE, time.monotonic())
                last_reason = failure.reason
                self.ctx.stats.count("hyphal_upstream_cx_connect_fail", spec.name)
                log.debug("cluster %s: %s", spec.name, failure.detail)
                if failure.reason == "upstream_connect_failure" and self._may_retry(
                        runtime, None, FailureKind.CONNECT_FAILURE):
                    await self._backoff(backoff, backoff_round, deadline)
                    backoff_round += 1
                    continue
                self._local(503, failure.reason)
                return
            runtime.start(endpoint.address)
            outcome: Outcome | None = None
            try:
                outcome = await self._attempt_on(conn, with_deadline(up_head, deadline, grpc),
                                                 route, deadline)
            finally:
                self._end_try(runtime, endpoint.address, outcome,
                              stale=reused and not stale_retry_used)
            if outcome is Outcome.DONE:
                return
            if outcome is Outcome.BROKEN:
                self.close_after = True
                self.reason = "upstream_reset_after_response_started"
                return
            if outcome is Outcome.RETRY:
                last_reason = "upstream_retriable_status"
                await self._backoff(backoff, backoff_round, deadline, self.retry_after_s)
                backoff_round += 1
                continue
            if outcome is Outcome.RESET:
                last_reason = "upstream_reset"
                if reused and not stale_retry_used and self.replayable:
                    # A pooled connection the server had already closed: try a fresh one.
                    stale_retry_used = True
                    tried.discard(endpoint.address)
                    continue
                if self._may_retry(runtime, None, FailureKind.RESET):
                    await self._backoff(backoff, backoff_round, deadline)
                    backoff_round += 1
                    continue
                self._local(502, "upstream_reset")
                return
            # TIMEOUT
            if deadline is not None and time.monotonic() >= deadline - 0.001:
                self._local(504, "timeout")
                return
            if self._may_retry(runtime, None, FailureKind.TIMEOUT):
                await self._backoff(backoff, backoff_round, deadline)
                backoff_round += 1
                continue
            self._local(504, "upstream_per_try_timeout")
            return

    async def _connection(self, runtime: ClusterRuntime, endpoint: EndpointSpec,
                          spec: ClusterSpec,
                          timeout_s: float) -> tuple[UpstreamConnection, bool] | None:
        """A new connection within the cluster's max_connections; over it, wait as a pending
        request (http1MaxPendingRequests; beyond that 503 pending_overflow)."""
        pool = self.ctx.pool
        limit = spec.circuit_breaker.max_connections
        if pool.connections(spec.name) < limit or pool.close_one_idle(spec.name):
            return await pool.acquire(endpoint, spec, timeout_s)
        if not runtime.breaker.admit_pending():
            runtime.overflow("pending_overflow")
            self._local(503, "pending_overflow")
            return None
        try:
            until = time.monotonic() + timeout_s
            while True:
                pooled = pool.idle_connection(endpoint, spec)
                if pooled is not None:
                    return pooled, True
                if pool.connections(spec.name) < limit or pool.close_one_idle(spec.name):
                    return await pool.acquire(endpoint, spec, max(until - time.monotonic(), 0.001))
                if not await pool.wait_for_connection(spec.name, until - time.monotonic()):
                    runtime.overflow("pending_timeout")
                    self._local(503, "pending_timeout")
                    return None
        finally:
            runtime.breaker.release_pending()

    def _end_try(self, runtime: ClusterRuntime, address: str, outcome: Outcome | None,
                 stale: bool) -> None:
        """Account for one finished try: in-flight counts, outlier detection, latency."""
        if self.retry_held:
            self.retry_held = False
            runtime.release_retry()
        now = time.monotonic()
        result: int | FailureKind | None
        if outcome is Outcome.DONE or outcome is Outcome.RETRY:
            result = self.status
        elif outcome is Outcome.TIMEOUT:
            result = FailureKind.TIMEOUT
        elif outcome is Outcome.RESET:
            result = None if stale else FailureKind.RESET  # a stale pooled connection
        elif outcome is Outcome.BROKEN:
            result = FailureKind.RESET
        else:
            result = None  # cancelled: the client left; not the endpoint's fault
        latency = now - self.upstream_started if result is not None else None
        runtime.finish(address, result, latency, now)

    def _may_retry(self, runtime: ClusterRuntime, status: int | None,
                   failure: FailureKind | None) -> bool:
        """Retry when the policy's conditions match, attempts remain, the body was kept, the
        per-cluster retry budget and the breaker's max_retries agree."""
        policy = self.policy
        if policy is None or self.retries_left <= 0 or self.committed or not self.replayable:
            return False
        if not runtime.conditions(policy).should_retry(status, None, failure):
            return False
        refusal = runtime.admit_retry(time.monotonic())
        if refusal is not None:
            self.retry_refused = refusal
            return False
        self.retries_left -= 1
        self.retry_held = True
        self.ctx.stats.count("hyphal_upstream_rq_retry", runtime.spec.name)
        return True

    def _retry_status(self, head: ResponseHead) -> bool:
        runtime = self.runtime
        if runtime is None or self.policy is None or not self.replayable:
            return False
        if not runtime.conditions(self.policy).should_retry(head.status):
            return False
        after = retry_after(head.headers)
        if after is not None:
            left = self.deadline_left()
            if left is not None and after >= left:
                return False  # the caller would be gone before the upstream wants us back
        if not self._may_retry(runtime, head.status, None):
            return False
        self.retry_after_s = after
        return True

    def deadline_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    async def _backoff(self, backoff: Backoff, round_: int, deadline: float | None,
                       retry_after_s: float | None = None) -> None:
        """Full-jitter exponential backoff (25 ms base, 250 ms cap by default) or the
        upstream's Retry-After, never past the deadline."""
        delay = backoff.delay(round_, retry_after_s)
        if deadline is not None:
            delay = min(delay, max(deadline - time.monotonic(), 0.0))
        self.retry_after_s = None
        if delay > 0:
            await asyncio.sleep(delay)

    def _mirror(self, route: Route, vhost: VirtualHost, source: RequestHead, target: Target,
                config: ProxyConfig, deadline: float | None) -> None:
        """Send the shadow copies (after the real response: they never delay it)."""
        if not self.replayable or not self.req_done:
            return  # the body was not kept whole: nothing faithful to send
        ctx = self.ctx
        body = b"".join(self.chunks)
        for mirror in route.mirrors:
            if mirror.fraction < 1.0 and ctx.rng.random() >= mirror.fraction:
                continue
            spec = config.clusters.get(mirror.cluster)
            if spec is None:
                continue
            shadow = replace(target, authority=shadow_authority(route.host_rewrite
                                                                or target.authority))
            shadow_route = replace(route, host_rewrite=None) if route.host_rewrite else route
            framed = replace(source, chunked=False, content_length=len(body) or None)
            _, head = upstream_request_head(
                framed, shadow, vhost, shadow_route, WeightedCluster(mirror.cluster, 1),
                peer_ip=self.down.peer_ip, peer_identity=self.down.peer_identity,
                own_identity=config.identity, inbound=False,
                downstream_tls=ctx.spec.tls is not None)
            if body and not framed.content_length:
                head = head[:-2] + b"Content-Length: %d\r\n\r\n" % len(body)
            timeout = None if deadline is None else max(deadline - self.started, 0.001)
            ctx.clusters.mirrors.send(ctx.clusters.runtime(spec), head, body, timeout)

    async def _attempt_on(self, conn: UpstreamConnection, up_head: bytes, route: Route,
                          deadline: float | None) -> Outcome:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outcome] = loop.create_future()
        self.attempt = fut
        self.up = conn
        self.skip_informational = False
        conn.begin(self, self.head.method == b"HEAD")
        framed = self.head.chunked
        parts = [up_head]
        for chunk in self.chunks:
            parts.append(encode_chunk(chunk) if framed else chunk)
        if self.req_done and framed:
            parts.append(LAST_CHUNK)
        conn.write(b"".join(parts))
        if not self.replayable:
            self.chunks.clear()
            self.chunk_bytes = 0
        self.down.resume_reading("buffer")
        if self.down.pause_upstream_reads() and conn.transport is not None:
            conn.transport.pause_reading()
        self.upstream_started = time.monotonic()
        per_try = self.policy.per_try_timeout_s if self.policy else None
        limits = [t for t in (per_try, None if deadline is None else deadline - time.monotonic())
                  if t is not None]
        if limits:
            self.attempt_timer = loop.call_later(max(min(limits), 0.0), self._on_timeout, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if self.up is conn:
                conn.abort()
                self.up = None
            raise
        finally:
            if self.attempt_timer is not None:
                self.attempt_timer.cancel()
                self.attempt_timer = None
            self.attempt = None

    def _on_timeout(self, fut: asyncio.Future[Outcome]) -> None:
        if fut.done():
            return
        conn = self.up
        self.up = None
        if conn is not None:
            conn.abort()
        fut.set_result(Outcome.BROKEN if self.committed else Outcome.TIMEOUT)
        if self.committed:
            self.reason = "timeout"

    def _redirect(self, action: RedirectAction, target: Target) -> None:
        assert self.route is not None
        location = redirect_location(action, self.route, target)
        self._local(action.status, "redirect", body=b"", extra=[(b"location", location)])
