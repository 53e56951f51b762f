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
import random
import time

from hyphal.proxy.filters.fault import decide as decide_fault
from hyphal.proxy.http.headers import LAST_CHUNK, encode_chunk, header_map
from hyphal.proxy.http.relay import (
    _RETRY_ON_CONNECT,
    _RETRY_ON_RESET,
    _RETRY_ON_TIMEOUT,
    CONTINUE,
    Downstream,
    Outcome,
    Relay,
)
from hyphal.proxy.http.request import hash_key_for, redirect_location, upstream_request_head
from hyphal.proxy.router import Target, parse_target, select_route
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
    DirectResponse,
    RedirectAction,
    Route,
    VirtualHost,
)
from hyphal.proxy.upstream.cluster import ClusterRuntime
from hyphal.proxy.upstream.pool import ConnectFailure, UpstreamConnection

__all__ = ["Downstream", "Exchange"]

log = logging.getLogger(__name__)


class Exchange(Relay):
    """One request/response exchange; `run()` is its task."""

    __slots__ = ()

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

    async def _run(self) -> None:
        head = self.head
        ctx = self.ctx
        config = self.config
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
        runtime = ctx.clusters.runtime(spec)
        self.runtime = runtime
        if runtime.circuit_open():
            self._local(503, "circuit_open")
            return
        self.request_id, up_head = upstream_request_head(
            head, target, vhost, route, picked, peer_ip=self.down.peer_ip,
            peer_identity=self.down.peer_identity, own_identity=config.identity,
            inbound=ctx.spec.is_inbound, downstream_tls=ctx.spec.tls is not None)
        if head.expect_continue and not self.req_done:
            self.down.send(CONTINUE)
            self.down.flush()
        await self._forward(runtime, spec, route, vhost, up_head, target)

    async def _forward(self, runtime: ClusterRuntime, spec: ClusterSpec, route: Route,
                       vhost: VirtualHost, up_head: bytes, target: Target) -> None:
        policy = route.retry or vhost.retry
        self.policy = policy
        self.retries_left = policy.num_retries if policy else 0
        timeout = route.timeout_s
        deadline = self.started + timeout if timeout else None
        hash_key = hash_key_for(route, target, self.head.headers, self.down.peer_ip)
        tried: set[str] = set()
        backoff_round = 0
        stale_retry_used = False
        last_reason = "no_healthy_upstream"
        while True:
            endpoint = runtime.pick(frozenset(tried), hash_key)
            if endpoint is None:
                self._local(503, "no_healthy_upstream" if not tried else last_reason)
                return
            tried.add(endpoint.address)
            self.upstream_addr = endpoint.address
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._local(504, "timeout")
                return
            connect_timeout = spec.connect_timeout_s if remaining is None else min(
                spec.connect_timeout_s, remaining)
            try:
                # Pooled connection first, without an await (the common case).
                pooled = self.ctx.pool.idle_connection(endpoint, spec)
                if pooled is not None:
                    conn, reused = pooled, True
                else:
                    conn, reused = await self.ctx.pool.acquire(endpoint, spec, connect_timeout)
            except ConnectFailure as failure:
                runtime.connect_failed(endpoint.address)
                last_reason = failure.reason
                self.ctx.stats.count("hyphal_upstream_cx_connect_fail", spec.name)
                log.debug("cluster %s: %s", spec.name, failure.detail)
                if failure.reason == "upstream_connect_failure" and self._may_retry(
                        _RETRY_ON_CONNECT, runtime):
                    await self._backoff(backoff_round)
                    backoff_round += 1
                    continue
                self._local(503, failure.reason)
                return
            runtime.start(endpoint.address)
            outcome = Outcome.RESET
            try:
                outcome = await self._attempt_on(conn, up_head, route, deadline)
            finally:
                runtime.finish(endpoint.address, self.status if outcome is Outcome.DONE
                               else (503 if outcome is Outcome.RETRY else None))
            if outcome is Outcome.DONE:
                return
            if outcome is Outcome.BROKEN:
                self.close_after = True
                self.reason = "upstream_reset_after_response_started"
                return
            if outcome is Outcome.RETRY:
                last_reason = "upstream_retriable_status"
                await self._backoff(backoff_round)
                backoff_round += 1
                continue
            if outcome is Outcome.RESET:
                last_reason = "upstream_reset"
                if reused and not stale_retry_used and self.replayable:
                    # A pooled connection the server had already closed: try a fresh one.
                    stale_retry_used = True
                    tried.discard(endpoint.address)
                    continue
                if self._may_retry(_RETRY_ON_RESET, runtime):
                    await self._backoff(backoff_round)
                    backoff_round += 1
                    continue
                self._local(502, "upstream_reset")
                return
            # TIMEOUT
            if deadline is not None and time.monotonic() >= deadline - 0.001:
                self._local(504, "timeout")
                return
            if self._may_retry(_RETRY_ON_TIMEOUT, runtime):
                await self._backoff(backoff_round)
                backoff_round += 1
                continue
            self._local(504, "upstream_per_try_timeout")
            return

    async def _backoff(self, round_: int) -> None:
        policy = self.policy
        base = policy.base_interval_s if policy else 0.025
        cap = policy.max_interval_s if policy else 0.25
        # Envoy: uniform in [0, (2^n - 1) * base], capped.
        ceiling = min(cap, base * ((1 << (round_ + 1)) - 1))
        runtime = self.runtime
        if runtime is not None:
            runtime.active_retries += 1
        try:
            await asyncio.sleep(random.uniform(0, ceiling))
        finally:
            if runtime is not None:
                runtime.active_retries -= 1

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
