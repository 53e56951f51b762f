"""One HTTP/2 request stream through the proxy: route, policy, upstream attempts, relay.

Theory of operation: the downstream connection makes an H2Exchange per request stream and
feeds it DATA, trailers, end and reset events; `run()` (one task) decides the route (`:path`
and `:authority` through `hyphal.proxy.router`), RBAC, faults, picks a weighted cluster and
uses the cluster runtime (breakers, picker, outlier detection, retry budget, backoff) exactly
as the HTTP/1.1 exchange does, then makes attempts, each one stream on a pooled multiplexed
upstream connection. Upstream events arrive synchronously (the exchange is the stream's sink)
and either commit the response or, before commit, end the attempt with RETRY when the status
or a trailers-only `grpc-status` matches `retry_on`. Bodies stream with per-chunk flow
control acknowledgements; up to REPLAY_LIMIT bytes are kept for a retry.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from functools import partial

from h2.exceptions import H2Error

from hyphal.proxy.filters.chain import ANSWERED, run_request_filters
from hyphal.proxy.filters.fault import decide as decide_fault
from hyphal.proxy.h2 import grpc
from hyphal.proxy.h2.bridge import H1Pool
from hyphal.proxy.h2.grpc import H2Headers
from hyphal.proxy.h2.headers import upstream_block, with_deadline
from hyphal.proxy.h2.mirror import send_mirrors
from hyphal.proxy.h2.relay import Downstream, H2Relay, Outcome, UpstreamStream, h2_pool, log
from hyphal.proxy.h2.upstream import H2Pool
from hyphal.proxy.http.headers import header_map
from hyphal.proxy.http.request import redirect_location
from hyphal.proxy.pathnorm import normalized
from hyphal.proxy.resilience.backoff import Backoff, FailureKind
from hyphal.proxy.router import Target, rewrite_path, select_route
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
    DirectResponse,
    EndpointSpec,
    LbPolicy,
    RedirectAction,
    Route,
    VirtualHost,
)
from hyphal.proxy.upstream.cluster import ClusterRuntime
from hyphal.proxy.upstream.policy import (
    caller_budget,
    effective_deadline,
    request_hash_key,
    retry_after,
)
from hyphal.proxy.upstream.pool import ConnectFailure
from hyphal.telemetry import tracing

__all__ = ["Downstream", "H2Exchange"]

_HASHING = frozenset({LbPolicy.RING_HASH, LbPolicy.MAGLEV})


class H2Exchange(H2Relay):
    """One request stream; `run()` is its task."""

    # ---------------------------------------------------------------- the task
    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            if not self.resp_done and self.reason == "-":
                self.reason = "downstream_disconnect"
        except Exception:  # noqa: BLE001 -- a bug must cost one stream, not the connection
            log.exception("h2 exchange failed: %s %s", self.head.method, self.head.path)
            self._local(500, "internal_error")
        finally:
            self._finish()

    async def _run(self) -> None:
        head = self.head
        ctx = self.ctx
        config = self.config
        if tracing.TRACER.enabled:
            self.span = tracing.TRACER.begin(head.headers, ctx.spec.is_inbound,
                                             self.started_wall)
        if head.method == "CONNECT" or not head.path.startswith("/") or not head.authority:
            self._local(400, "bad_request_target")
            return
        path, _, query = head.path.partition("?")
        target = Target(head.authority, path, query, False)
        if ctx.spec.is_inbound:
            clean = normalized(target)  # what RBAC, routes and the app see (pathnorm)
            if clean is None:
                self._local(400, "bad_request_target")
                return
            target = clean
            if target.path != path:
                self.head = head = replace(head, path=target.origin)
            path = target.path
        assert target is not None
        table = config.route_table_for(ctx.spec)
        if table is None:
            self._local(404, "no_route")
            return
        auth = None  # inbound request filters (jwt_authn, local_ratelimit) run before RBAC
        if ctx.spec.request_filters:
            auth = run_request_filters(self, ctx.spec.request_filters, query)
            if auth is ANSWERED:
                return
            head = self.head
        rbac = ctx.spec.rbac
        headers = None
        if table.needs_headers or rbac is not None:
            headers = header_map(head.headers)
            headers[":method"] = head.method
            headers[":path"] = head.path
            headers[":authority"] = head.authority
        vhost, route = select_route(table, target, head.method, headers)
        if route is None or vhost is None:
            self._local(404, "no_route")
            return
        self.route, self.vhost, self.route_name = route, vhost, route.name
        if rbac is not None:
            allowed, _policy = rbac.allowed(self.down.peer_identity, head.method, path,
                                            self.down.port, headers or {}, auth)
            if not allowed:
                self._local(403, "rbac_denied")
                return
        action = route.action
        if isinstance(action, DirectResponse):
            self._local(action.status, "direct_response", body=action.body)
            return
        if isinstance(action, RedirectAction):
            location = redirect_location(action, route, target)
            self._local(action.status, "redirect", body=b"", extra=[(b"location", location)])
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
        self.cluster_name = picked.name
        spec = config.clusters.get(picked.name)
        if spec is None:
            self._local(503, "cluster_not_found")
            return
        self.spec = spec
        if not spec.http2 and self.grpc:
            # gRPC needs HTTP/2 end to end (trailers): it is never bridged to HTTP/1.1.
            self._local(503, "upstream_protocol_unsupported")
            return
        budget = caller_budget(head.headers)
        if budget.remaining_s is not None and budget.remaining_s <= 0:
            self._local(504, "deadline_exceeded")
            return
        runtime = ctx.clusters.runtime(spec)
        self.runtime = runtime
        refusal = runtime.admit(time.monotonic())
        if refusal is not None:
            self._local(503, refusal)
            return
        try:
            out_path = (rewrite_path(route, target)
                        if route.prefix_rewrite is not None or route.regex_rewrite is not None
                        else head.path)
            source = head if self.span is None else replace(  # the next hop's parent
                head, headers=self.span.inject(head.headers))
            self.request_id, block = upstream_block(
                source, out_path, vhost, route, picked, tls=spec.tls is not None,
                peer_ip=self.down.peer_ip, peer_identity=self.down.peer_identity,
                own_identity=config.identity, inbound=ctx.spec.is_inbound,
                downstream_tls=ctx.spec.tls is not None)
            deadline = effective_deadline(self.started, route.timeout_s, budget.remaining_s)
            self.deadline = deadline
            try:
                await self._forward(runtime, spec, route, vhost, block, target, deadline)
            finally:
                if route.mirrors and not ctx.spec.is_inbound and self.replayable and (
                        self.req_done):
                    send_mirrors(ctx, config, source, out_path, vhost, route,
                                 b"".join(self.kept), self.grpc, self.down.peer_ip,
                                 self.down.peer_identity,
                                 None if deadline is None else deadline - self.started)
        finally:
            runtime.release()

    # ---------------------------------------------------------------- forwarding
    async def _forward(self, runtime: ClusterRuntime, spec: ClusterSpec, route: Route,
                       vhost: VirtualHost, block: H2Headers, target: Target,
                       deadline: float | None) -> None:
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
        pool: H2Pool | H1Pool = h2_pool(self.ctx) if spec.http2 else H1Pool(self.ctx.pool)
        tried: set[str] = set()
        round_ = 0
        last_reason = "no_healthy_upstream"
        while True:
            now = time.monotonic()
            if deadline is not None and deadline - now <= 0:
                self._local(504, "timeout")
                return
            endpoint = runtime.pick(tried, hash_key, now)
            if endpoint is None:
                self._local(503, last_reason if tried else "no_healthy_upstream")
                return
            tried.add(endpoint.address)
            self.upstream_addr = endpoint.address
            remaining = None if deadline is None else deadline - now
            timeout = spec.connect_timeout_s if remaining is None else min(
                spec.connect_timeout_s, remaining)
            try:
                conn = pool.ready(endpoint, spec)
                if conn is None:
                    conn = await self._connection(pool, runtime, endpoint, spec, timeout)
                    if conn is None:
                        return  # answered: pending overflow or timeout
            except ConnectFailure as failure:
                runtime.record(endpoint.address, FailureKind.CONNECT_FAILURE, time.monotonic())
                last_reason = failure.reason
                self.ctx.stats.count("hyphal_upstream_cx_connect_fail", spec.name)
                log.debug("cluster %s: %s", spec.name, failure.detail)
                if failure.reason == "upstream_connect_failure" and self._may_retry(
                        runtime, None, None, FailureKind.CONNECT_FAILURE):
                    await self._backoff(backoff, round_, deadline)
                    round_ += 1
                    continue
                self._local(503, failure.reason)
                return
            runtime.start(endpoint.address)
            outcome: Outcome | None = None
            try:
                left = None if deadline is None else deadline - time.monotonic()
                outcome = await self._attempt(conn, with_deadline(block, left, self.grpc),
                                              deadline)
            finally:
                self._end_try(runtime, endpoint.address, outcome)
            if outcome is Outcome.DONE or outcome is Outcome.BROKEN:
                return
            if outcome is Outcome.RETRY:
                last_reason = "upstream_retriable_status"
                await self._backoff(backoff, round_, deadline, self.retry_after_s)
                round_ += 1
                continue
            if outcome is Outcome.RESET:
                last_reason = "upstream_refused_stream" if self.refused else "upstream_reset"
                kind = FailureKind.REFUSED_STREAM if self.refused else FailureKind.RESET
                if not self._may_retry(runtime, None, None, kind):
                    self._local(503 if self.refused else 502, last_reason)
                    return
            else:  # TIMEOUT
                if deadline is not None and time.monotonic() >= deadline - 0.001:
                    self._local(504, "timeout")
                    return
                if not self._may_retry(runtime, None, None, FailureKind.TIMEOUT):
                    self._local(504, "upstream_per_try_timeout")
                    return
            await self._backoff(backoff, round_, deadline)
            round_ += 1

    async def _connection(self, pool: H2Pool | H1Pool, runtime: ClusterRuntime,
                          endpoint: EndpointSpec, spec: ClusterSpec,
                          timeout_s: float) -> UpstreamStream | None:
        """A connection with room for a stream, within the cluster's max_connections; past
        it, wait as a pending request for a stream to end (max_pending_requests; beyond
        that 503 pending_overflow, and pending_timeout when none ends in time)."""
        limit = spec.circuit_breaker.max_connections
        until = time.monotonic() + timeout_s
        pending = False
        try:
            while True:
                conn = pool.ready(endpoint, spec)
                if conn is not None:
                    return conn
                if pool.connections(spec.name) < limit or pool.close_one_idle(spec.name):
                    conn, _ = await pool.acquire(endpoint, spec,
                                                 max(until - time.monotonic(), 0.001))
                    if conn.has_room():
                        return conn
                    continue  # a shared connect, filled by others first
                if not pending:
                    if not runtime.breaker.admit_pending():
                        runtime.overflow("pending_overflow")
                        self._local(503, "pending_overflow")
                        return None
                    pending = True
                if not await pool.wait_for_room(spec.name, until - time.monotonic()):
                    runtime.overflow("pending_timeout")
                    self._local(503, "pending_timeout")
                    return None
        finally:
            if pending:
                runtime.breaker.release_pending()

    async def _attempt(self, conn: UpstreamStream, block: H2Headers,
                       deadline: float | None) -> Outcome:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outcome] = loop.create_future()
        self.refused = False
        bodyless = self.req_done and not self.kept and not self.waiting and not self.sent_once
        try:
            sid = conn.open_stream(self, block, bodyless and self.req_trailers is None)
        except H2Error as exc:
            log.debug("cluster %s: cannot open a stream: %s", self.cluster_name, exc)
            return Outcome.RESET
        self.up, self.up_sid, self.attempt = conn, sid, fut
        if self.sent_once:  # a retry: replay what was kept, acknowledge what never went
            fresh = len(self.waiting)
            for data in self.kept[:len(self.kept) - fresh]:
                conn.send_data(sid, data, False)
        for data, flow in self.waiting:
            conn.send_data(sid, data, False, partial(self.down.ack, self.sid, flow))
        self.waiting.clear()
        self.sent_once = True
        if self.req_done and not bodyless:
            self._end_upstream(conn)
        self.upstream_started = time.monotonic()
        per_try = self.policy.per_try_timeout_s if self.policy else None
        limits = [t for t in (per_try, None if deadline is None else deadline - time.monotonic())
                  if t is not None]
        timer = loop.call_later(max(min(limits), 0.0), self._on_timeout, fut) if limits else None
        try:
            return await fut
        except asyncio.CancelledError:
            if self.up is conn:
                conn.cancel(sid)
                self.up = None
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self.attempt = None

    # ---------------------------------------------------------------- policy
    def _retry_response(self, status: int, code: int | None, block: H2Headers) -> bool:
        """A retriable status or gRPC code, unless the server's pushback says not to (or
        not before the caller's deadline): `grpc-retry-pushback-ms` for gRPC, Retry-After
        for other requests; the wait it asks for replaces the backoff."""
        runtime, policy = self.runtime, self.policy
        if runtime is None or policy is None or not self.replayable:
            return False
        if not runtime.conditions(policy).should_retry(status, code):
            return False
        after = grpc.retry_pushback_s(block) if self.grpc else retry_after(block)
        if after is not None:
            if after < 0:
                return False  # gRFC A6: a malformed or negative pushback stops retries
            if self.deadline is not None and time.monotonic() + after >= self.deadline:
                return False  # the caller would be gone before the upstream wants us back
        if not self._may_retry(runtime, status, code, None):
            return False
        self.retry_after_s = after
        return True

    def _may_retry(self, runtime: ClusterRuntime, status: int | None, code: int | None,
                   failure: FailureKind | None) -> bool:
        policy = self.policy
        if policy is None or self.retries_left <= 0 or self.committed or not self.replayable:
            return False
        if not runtime.conditions(policy).should_retry(status, code, failure):
            return False
        if runtime.admit_retry(time.monotonic()) is not None:
            return False
        self.retries_left -= 1
        self.retry_held = True
        self.ctx.stats.count("hyphal_upstream_rq_retry", runtime.spec.name)
        return True

    def _end_try(self, runtime: ClusterRuntime, address: str, outcome: Outcome | None) -> None:
        if self.retry_held:
            self.retry_held = False
            runtime.release_retry()
        now = time.monotonic()
        result: int | FailureKind | None
        if outcome is Outcome.DONE or outcome is Outcome.RETRY:
            # gRPC errors ride on HTTP 200: outlier detection counts their HTTP equivalent.
            result = grpc.to_http(self.grpc_status) if self.grpc_status is not None else (
                self.status)
        elif outcome is Outcome.TIMEOUT:
            result = FailureKind.TIMEOUT
        elif outcome is Outcome.RESET:
            result = None if self.refused else FailureKind.RESET
        elif outcome is Outcome.BROKEN:
            result = FailureKind.RESET if self.reason != "timeout" else FailureKind.TIMEOUT
        else:
            result = None
        latency = now - self.upstream_started if result is not None else None
        runtime.finish(address, result, latency, now)

    async def _backoff(self, backoff: Backoff, round_: int, deadline: float | None,
                       retry_after_s: float | None = None) -> None:
        delay = backoff.delay(round_, retry_after_s)
        self.retry_after_s = None
        if deadline is not None:
            delay = min(delay, max(deadline - time.monotonic(), 0.0))
        if delay > 0:
            await asyncio.sleep(delay)
