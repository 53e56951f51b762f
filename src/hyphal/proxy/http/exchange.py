"""One request/response exchange through the proxy: route, policy, upstream attempts, relay.

Theory of operation: the server creates an Exchange per request head and feeds it body
events, then calls `start()`. Two paths share every decision step (`_route`, `_plan`):

- the fast path, for a whole request (no body or a small one already read) on a route with
  no fault, mirror or hash policy and a pooled idle connection ready, runs inside the
  server's `data_received`: route, pick, write the upstream head, no task, no future, no
  await. The response is relayed from the upstream connection's callbacks and the exchange
  finishes in `on_response_end`. A try that ends before anything was committed (reset,
  retriable status, per-try timeout) hands over to the general path with its outcome, so
  retries, outlier detection, budgets and backoff are the general path's, not a copy.
- the general path (`run()`, one task) awaits faults, new connections, backoff and the
  outcome of each attempt. Within an attempt everything is still driven synchronously by
  upstream callbacks (`on_response_*`), which either commit the response (head written
  downstream, body streamed) or, for a retriable status before commit, end the attempt with
  RETRY.

Request bodies up to REPLAY_LIMIT are kept so an attempt can be replayed; larger bodies
disable retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from hyphal.proxy.filters.chain import ANSWERED, run_request_filters
from hyphal.proxy.filters.fault import decide as decide_fault
from hyphal.proxy.http.attempts import Attempts
from hyphal.proxy.http.headers import header_map
from hyphal.proxy.http.plan import First, rbac_needs_headers
from hyphal.proxy.http.relay import (
    BROKEN,
    CONTINUE,
    DONE,
    RESET,
    RETRY,
    TIMEOUT,
    Downstream,
    Outcome,
)
from hyphal.proxy.http.request import upstream_request_head
from hyphal.proxy.pathnorm import normalized
from hyphal.proxy.resilience.backoff import FailureKind
from hyphal.proxy.router import parse_target, select_route
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    DirectResponse,
    LbPolicy,
    RedirectAction,
)
from hyphal.proxy.upstream.policy import (
    NO_BUDGET,
    caller_budget,
    effective_deadline,
    request_hash_key,
    with_deadline,
)
from hyphal.proxy.upstream.pool import ConnectFailure
from hyphal.telemetry import tracing

__all__ = ["Downstream", "Exchange", "rbac_needs_headers"]

log = logging.getLogger(__name__)

_HASHING = frozenset({LbPolicy.RING_HASH, LbPolicy.MAGLEV})
_NOTHING: frozenset[str] = frozenset()

# Where `run()` starts: from the top, after `_route` (fault next), or after `_plan` (tries).
_FROM_START, _ROUTED, _PLANNED = range(3)


class Exchange(Attempts):
    """One request/response exchange: `start()` takes the fast path or starts `run()`."""

    __slots__ = ()  # its state is in Relay

    # ---------------------------------------------------------------- entry points
    def start(self) -> None:
        self.launched = True
        if not self.req_done or self.malformed or self.close_after:
            self.task = self.down.loop.create_task(self.run())
            return
        # The fast path (the hot path: inlined here rather than layered): the request is
        # whole, so decide and write upstream now, in the caller's callback.
        self.running = True
        try:
            tracer = tracing.TRACER
            if tracer.enabled:  # a sampled request records its span on the general path
                span = tracer.begin(self.head.headers, self.ctx.inbound, self.started_wall)
                if span is not None:
                    self.span = span
                    self.task = self.down.loop.create_task(self.run())
                    return
            if not self._route():
                self._finish()
                return
            route = self.route
            assert route is not None
            if (route.fault is not None or route.mirrors) and not self.ctx.inbound:
                self._hand_over(_ROUTED)
                return
            now = time.monotonic()
            if not self._plan(now):
                self._finish()
                return
            self._fast_attempt(now)
        except Exception:  # as in run(): a bug costs this request only
            log.exception("exchange failed: %s %s", self.head.method, self.head.target)
            self._fast_abandon()

    async def run(self, stage: int = _FROM_START, first: First | None = None) -> None:
        self.running = True
        try:
            if self.malformed:
                self._local(400, "bad_request")
                return
            if self.close_after:
                return  # the client went away before we started
            await self._run(stage, first)
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

    async def _run(self, stage: int, first: First | None) -> None:
        inbound = self.ctx.inbound
        if stage == _FROM_START:
            if tracing.TRACER.enabled and self.span is None:  # (start() may have begun it)
                self.span = tracing.TRACER.begin(self.head.headers, inbound, self.started_wall)
            if not self._route():
                return
        if stage != _PLANNED:
            assert self.route is not None
            fault_spec = self.route.fault
            if fault_spec is not None and not inbound:
                fault = decide_fault(fault_spec, self.ctx.rng)
                if fault.delay_s is not None:
                    await asyncio.sleep(fault.delay_s)
                if fault.abort_status is not None:
                    self._local(fault.abort_status, "fault_injected")
                    return
            if not self._plan(time.monotonic()):
                return
        route, vhost, target = self.route, self.vhost, self.target
        assert route is not None and vhost is not None and target is not None
        try:
            await self._forward(first)
        finally:
            if route.mirrors and not inbound:
                self._mirror(route, vhost, self.up_source, target, self.config, self.deadline)
            self._release_admission()

    # ---------------------------------------------------------------- decisions (both paths)
    def _route(self) -> bool:
        """Target, virtual host and route, RBAC, direct responses and redirects. False when
        the exchange was answered here."""
        head = self.head
        ctx = self.ctx
        spec = ctx.spec
        target = parse_target(head.target, head.host)
        if target is not None and ctx.inbound:
            target = normalized(target)  # what RBAC, routes and the app see (pathnorm)
        if target is None:
            self._local(400, "bad_request_target")
            return False
        method = head.method.decode("latin-1")
        self.target = target
        self.authority = target.authority
        self.path = target.origin
        table = self.config.route_table_for(spec)
        if table is None:
            self._local(404, "no_route")
            return False
        auth = None  # inbound request filters (jwt_authn, local_ratelimit) run before RBAC
        if spec.request_filters:
            auth = run_request_filters(self, spec.request_filters, target.query)
            if auth is ANSWERED:
                return False
            head = self.head
        rbac = spec.rbac
        headers = None
        if table.needs_headers or (rbac is not None and rbac.needs_headers):
            headers = header_map(head.headers)
            headers[":method"] = method
            headers[":path"] = self.path
            headers[":authority"] = target.authority
        vhost, route = select_route(table, target, method, headers)
        if route is None or vhost is None:
            self._local(404, "no_route")
            return False
        self.route = route
        self.vhost = vhost
        self.route_name = route.name
        if rbac is not None:
            down = self.down
            allowed, _policy = rbac.allowed(down.peer_identity, method, target.path,
                                            down.port, headers or {}, auth)
            if not allowed:
                self._local(403, "rbac_denied")
                return False
        action = route.action
        if action.__class__ is ClusterAction:
            return True
        if isinstance(action, DirectResponse):
            self._local(action.status, "direct_response", body=action.body)
            return False
        if isinstance(action, RedirectAction):
            self._redirect(action, target)
            return False
        return True

    def _plan(self, now: float) -> bool:
        """Cluster (by weight), the caller's deadline, admission, the upstream head. False
        when the exchange was answered here; otherwise an admission is held
        (`_release_admission` gives it back)."""
        head = self.head
        ctx = self.ctx
        route, vhost, target = self.route, self.vhost, self.target
        assert route is not None and vhost is not None and target is not None
        action = route.action
        assert isinstance(action, ClusterAction)
        clusters = action.clusters
        picked = action.pick(ctx.rng.randrange(action.total)) if len(
            clusters) > 1 else clusters[0]
        spec = self.config.clusters.get(picked.name)
        self.cluster_name = picked.name
        if spec is None:
            self._local(503, "cluster_not_found")
            return False
        self.spec = spec
        # The reader notes whether the headers carry anything for caller_budget.
        budget = caller_budget(head.headers, strip=False) if head.budget else NO_BUDGET
        remaining = budget.remaining_s
        if remaining is not None and remaining <= 0:
            self._local(504, "deadline_exceeded")  # the caller has already given up
            return False
        runtime = ctx.clusters.runtime(spec)
        self.runtime = runtime
        refusal = runtime.admit(now)
        if refusal is not None:
            self._local(503, refusal)
            return False
        self.admitted = True
        try:
            # The deadline headers are dropped by upstream_request_head itself (by index
            # from the head's raw lines, or by name), so the head goes as it came.
            up_source = head
            if self.span is not None:  # sampled: the next hop's parent is this span
                up_source = replace(up_source, headers=self.span.inject(up_source.headers))
            down = self.down
            self.request_id, self.up_head = upstream_request_head(
                up_source, target, vhost, route, picked, peer_ip=down.peer_ip,
                peer_identity=down.peer_identity, own_identity=self.config.identity,
                inbound=ctx.inbound, downstream_tls=ctx.downstream_tls)
        except Exception:
            self._release_admission()
            raise
        self.up_source = up_source
        if head.expect_continue and not self.req_done:
            self.down.send(CONTINUE)
            self.down.flush()
        self.deadline = effective_deadline(self.started, route.timeout_s, remaining)
        self.grpc = budget.grpc
        return True

    # ---------------------------------------------------------------- fast path
    def _fast_attempt(self, now: float) -> None:
        """Try a pooled idle connection now; anything else goes to the general path."""
        spec, route, runtime = self.spec, self.route, self.runtime
        assert spec is not None and route is not None and runtime is not None
        if route.hash_policy and spec.lb in _HASHING:
            self._hand_over(_PLANNED)
            return
        deadline = self.deadline
        endpoint = runtime.pick(_NOTHING, None, now)
        if endpoint is None or (deadline is not None and deadline <= now):
            self._hand_over(_PLANNED)  # it answers no_healthy_upstream / timeout
            return
        conn = self.ctx.pool.idle_connection(endpoint, spec, now)
        if conn is None:
            self._hand_over(_PLANNED, First(endpoint, None))
            return
        vhost = self.vhost
        assert vhost is not None
        policy = route.retry or vhost.retry
        self.policy = policy
        self.retries_left = policy.num_retries if policy else 0
        address = endpoint.address
        self.upstream_addr = address
        self.fast_endpoint = endpoint
        runtime.start(address)
        self.fast = True
        self._send_request(conn, with_deadline(self.up_head, deadline, self.grpc, now), now)
        due = self._try_due(deadline)
        if due is not None and self.fast:
            self.down.arm_try(self, due)

    def _hand_over(self, stage: int, first: First | None = None) -> None:
        self.task = self.down.loop.create_task(self.run(stage, first))

    def _fast_settled(self, outcome: Outcome, now: float | None = None) -> None:
        if not self.fast:
            return
        self.fast = False
        self.down.disarm_try(self)
        runtime = self.runtime
        assert runtime is not None
        # A pooled connection: a reset is a stale connection, not the endpoint's fault.
        self._end_try(runtime, self.upstream_addr, outcome, True, now)
        if outcome is DONE or outcome is BROKEN:
            if outcome is BROKEN:
                self.close_after = True
                self.reason = "upstream_reset_after_response_started"
            if self.admitted:  # _release_admission, inline on the hot path
                self.admitted = False
                runtime.release()
            self._finish(now)
            return
        assert self.fast_endpoint is not None
        self._hand_over(_PLANNED, First(self.fast_endpoint, outcome))

    def _on_fast_timeout(self) -> None:
        conn = self.up
        self.up = None
        if conn is not None:
            conn.abort()
        if self.committed:
            self.reason = "timeout"
        self._fast_settled(BROKEN if self.committed else TIMEOUT)

    def _fast_cancelled(self) -> None:
        """The client left while the fast path's try was in flight."""
        self.fast = False
        self.down.disarm_try(self)
        conn = self.up
        self.up = None
        if conn is not None:
            conn.abort()
        if self.runtime is not None:
            self._end_try(self.runtime, self.upstream_addr, None, False)
        self._release_admission()
        self._finish()

    def _fast_abandon(self) -> None:
        trying = self.fast
        self.fast = False
        self.down.disarm_try(self)
        if trying and self.runtime is not None:
            self._end_try(self.runtime, self.upstream_addr, None, False)
        if not self.committed:
            self._local(500, "internal_error")
        self.close_after = True
        self._release_admission()
        if not self.ended:
            self._finish()

    # ---------------------------------------------------------------- general path
    async def _forward(self, first: First | None) -> None:
        """Tries until one commits a response: pick, connect (breakers), attempt, and on a
        retriable outcome back off and retry elsewhere while policy and budget allow.
        `first` resumes after the fast path (its try's outcome, or its picked endpoint)."""
        runtime, spec, route, vhost, target = (self.runtime, self.spec, self.route, self.vhost,
                                               self.target)
        assert runtime is not None and spec is not None and route is not None
        assert vhost is not None and target is not None
        deadline = self.deadline
        resumed = first is not None and first.outcome is not None
        if resumed:
            policy = self.policy  # set by the fast path; retries_left already counts
        else:
            policy = route.retry or vhost.retry
            self.policy = policy
            self.retries_left = policy.num_retries if policy else 0
            self.retry_after_s = None
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
        while True:
            if first is not None and first.outcome is not None:
                endpoint, outcome, reused = first.endpoint, first.outcome, True
                first = None
                tried.add(endpoint.address)
            else:
                now = time.monotonic()
                if deadline is not None and deadline - now <= 0:
                    self._local(504, "timeout")
                    return
                if first is not None:
                    endpoint, first = first.endpoint, None
                else:
                    picked = runtime.pick(tried, hash_key, now)
                    if picked is None:
                        self._local(503, "no_healthy_upstream" if not tried else last_reason)
                        return
                    endpoint = picked
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
                    runtime.record(endpoint.address, FailureKind.CONNECT_FAILURE,
                                   time.monotonic())
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
                attempt: Outcome | None = None
                try:
                    attempt = await self._attempt_on(
                        conn, with_deadline(self.up_head, deadline, self.grpc), route, deadline)
                finally:
                    self._end_try(runtime, endpoint.address, attempt,
                                  stale=reused and not stale_retry_used)
                outcome = attempt
            if outcome is DONE:
                return
            if outcome is BROKEN:
                self.close_after = True
                self.reason = "upstream_reset_after_response_started"
                return
            if outcome is RETRY:
                last_reason = "upstream_retriable_status"
                await self._backoff(backoff, backoff_round, deadline, self.retry_after_s)
                backoff_round += 1
                continue
            if outcome is RESET:
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
