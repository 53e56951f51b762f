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
from hyphal.proxy.http.codec import RequestHead
from hyphal.proxy.http.context import ListenerContext
from hyphal.proxy.http.headers import header_map
from hyphal.proxy.http.plan import First, Plan, Routed, rbac_needs_headers
from hyphal.proxy.http.relay import CONTINUE, Downstream, Outcome
from hyphal.proxy.http.request import upstream_request_head
from hyphal.proxy.pathnorm import normalized
from hyphal.proxy.resilience.backoff import FailureKind
from hyphal.proxy.router import parse_target, select_route
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    DirectResponse,
    EndpointSpec,
    LbPolicy,
    ProxyConfig,
    RedirectAction,
)
from hyphal.proxy.upstream.policy import (
    caller_budget,
    effective_deadline,
    request_hash_key,
    with_deadline,
)
from hyphal.proxy.upstream.pool import ConnectFailure
from hyphal.telemetry import tracing

__all__ = ["Downstream", "Exchange", "Plan"]

log = logging.getLogger(__name__)

_HASHING = frozenset({LbPolicy.RING_HASH, LbPolicy.MAGLEV})
_NOTHING: frozenset[str] = frozenset()

class Exchange(Attempts):
    """One request/response exchange: `start()` takes the fast path or starts `run()`."""

    __slots__ = ("fast_endpoint", "plan", "span")

    def __init__(self, down: Downstream, ctx: ListenerContext, head: RequestHead,
                 config: ProxyConfig) -> None:
        super().__init__(down, ctx, head, config)
        self.span: tracing.ActiveSpan | None = None  # set only for sampled requests
        self.plan: Plan | None = None
        self.fast_endpoint: EndpointSpec | None = None  # the fast path's try went there

    # ---------------------------------------------------------------- entry points
    def start(self) -> None:
        self.launched = True
        if (self.req_done and not self.malformed and not self.close_after
                and not tracing.TRACER.enabled):
            self._start_fast()
            return
        self.task = self.down.loop.create_task(self.run())

    async def run(self, routed: Routed | None = None, plan: Plan | None = None,
                  first: First | None = None) -> None:
        self.running = True
        try:
            if self.malformed:
                self._local(400, "bad_request")
                return
            if self.close_after:
                return  # the client went away before we started
            await self._run(routed, plan, first)
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

    async def _run(self, routed: Routed | None, plan: Plan | None,
                   first: First | None) -> None:
        if plan is None:
            if routed is None:
                if tracing.TRACER.enabled:
                    self.span = tracing.TRACER.begin(self.head.headers, self.ctx.spec.is_inbound,
                                                     self.started_wall)
                routed = self._route()
                if routed is None:
                    return
            route = routed[2]
            if route.fault is not None and not self.ctx.spec.is_inbound:
                fault = decide_fault(route.fault, self.ctx.rng)
                if fault.delay_s is not None:
                    await asyncio.sleep(fault.delay_s)
                if fault.abort_status is not None:
                    self._local(fault.abort_status, "fault_injected")
                    return
            plan = self._plan(routed)
            if plan is None:
                return
        route = plan.route
        try:
            await self._forward(plan, first)
        finally:
            if route.mirrors and not self.ctx.spec.is_inbound:
                self._mirror(route, plan.vhost, plan.up_source, plan.target, self.config,
                             plan.deadline)
            self._release_admission()

    # ---------------------------------------------------------------- decisions (both paths)
    def _route(self) -> Routed | None:
        """Target, virtual host and route, RBAC, direct responses and redirects. None when
        the exchange was answered here."""
        head = self.head
        ctx = self.ctx
        target = parse_target(head.target, head.host)
        if target is not None and ctx.spec.is_inbound:
            target = normalized(target)  # what RBAC, routes and the app see (pathnorm)
        if target is None:
            self._local(400, "bad_request_target")
            return None
        method = head.method.decode("latin-1")
        self.authority = target.authority
        self.path = target.origin
        table = self.config.route_table_for(ctx.spec)
        if table is None:
            self._local(404, "no_route")
            return None
        auth = None  # inbound request filters (jwt_authn, local_ratelimit) run before RBAC
        if ctx.spec.request_filters:
            auth = run_request_filters(self, ctx.spec.request_filters, target.query)
            if auth is ANSWERED:
                return None
            head = self.head
        rbac = ctx.spec.rbac
        headers = None
        if table.needs_headers or (rbac is not None and rbac_needs_headers(rbac)):
            headers = header_map(head.headers)
            headers[":method"] = method
            headers[":path"] = self.path
            headers[":authority"] = target.authority
        vhost, route = select_route(table, target, method, headers)
        if route is None or vhost is None:
            self._local(404, "no_route")
            return None
        self.route = route
        self.vhost = vhost
        self.route_name = route.name
        if rbac is not None:
            allowed, _policy = rbac.allowed(self.down.peer_identity, method, target.path,
                                            self.down.port, headers or {}, auth)
            if not allowed:
                self._local(403, "rbac_denied")
                return None
        action = route.action
        if isinstance(action, DirectResponse):
            self._local(action.status, "direct_response", body=action.body)
            return None
        if isinstance(action, RedirectAction):
            self._redirect(action, target)
            return None
        return target, vhost, route

    def _plan(self, routed: Routed) -> Plan | None:
        """Cluster (by weight), the caller's deadline, admission, the upstream head. None
        when the exchange was answered here; otherwise an admission is held
        (`_release_admission` gives it back)."""
        target, vhost, route = routed
        head = self.head
        ctx = self.ctx
        config = self.config
        action = route.action
        assert isinstance(action, ClusterAction)
        picked = action.pick(ctx.rng.randrange(action.total)) if len(
            action.clusters) > 1 else action.clusters[0]
        spec = config.clusters.get(picked.name)
        self.cluster_name = picked.name
        if spec is None:
            self._local(503, "cluster_not_found")
            return None
        self.spec = spec
        budget = caller_budget(head.headers)
        now = time.monotonic()
        if budget.remaining_s is not None and budget.remaining_s <= 0:
            self._local(504, "deadline_exceeded")  # the caller has already given up
            return None
        runtime = ctx.clusters.runtime(spec)
        self.runtime = runtime
        refusal = runtime.admit(now)
        if refusal is not None:
            self._local(503, refusal)
            return None
        self.admitted = True
        try:
            up_source = head if budget.headers is None else replace(head, headers=budget.headers)
            if self.span is not None:  # sampled: the next hop's parent is this span
                up_source = replace(up_source, headers=self.span.inject(up_source.headers))
            self.request_id, up_head = upstream_request_head(
                up_source, target, vhost, route, picked, peer_ip=self.down.peer_ip,
                peer_identity=self.down.peer_identity, own_identity=config.identity,
                inbound=ctx.spec.is_inbound, downstream_tls=ctx.spec.tls is not None)
        except Exception:
            self._release_admission()
            raise
        if head.expect_continue and not self.req_done:
            self.down.send(CONTINUE)
            self.down.flush()
        deadline = effective_deadline(self.started, route.timeout_s, budget.remaining_s)
        self.deadline = deadline
        return Plan(target, vhost, route, spec, runtime, up_head, up_source, deadline,
                    budget.grpc)

    # ---------------------------------------------------------------- fast path
    def _start_fast(self) -> None:
        """The request is whole: decide and write upstream now, in the caller's callback."""
        self.running = True
        try:
            routed = self._route()
            if routed is None:
                self._finish()
                return
            route = routed[2]
            if (route.fault is not None or route.mirrors) and not self.ctx.spec.is_inbound:
                self._hand_over(routed)
                return
            plan = self._plan(routed)
            if plan is None:
                self._finish()
                return
            self._fast_attempt(plan)
        except Exception:  # as in run(): a bug costs this request only
            log.exception("exchange failed: %s %s", self.head.method, self.head.target)
            self._fast_abandon()

    def _fast_attempt(self, plan: Plan) -> None:
        """Try a pooled idle connection now; anything else goes to the general path."""
        self.plan = plan
        spec = plan.spec
        route = plan.route
        if route.hash_policy and spec.lb in _HASHING:
            self._hand_over(None, plan)
            return
        runtime = plan.runtime
        now = time.monotonic()
        deadline = plan.deadline
        endpoint = runtime.pick(_NOTHING, None, now)
        if endpoint is None or (deadline is not None and deadline <= now):
            self._hand_over(None, plan)  # it answers no_healthy_upstream / timeout
            return
        conn = self.ctx.pool.idle_connection(endpoint, spec)
        if conn is None:
            self._hand_over(None, plan, First(endpoint, None))
            return
        policy = route.retry or plan.vhost.retry
        self.policy = policy
        self.retries_left = policy.num_retries if policy else 0
        self.upstream_addr = endpoint.address
        self.fast_endpoint = endpoint
        runtime.start(endpoint.address)
        self.fast = True
        self._send_request(conn, with_deadline(plan.up_head, deadline, plan.grpc, now))
        due = self._try_due(deadline)
        if due is not None and self.fast:
            self.down.arm_try(self, due)

    def _hand_over(self, routed: Routed | None, plan: Plan | None = None,
                   first: First | None = None) -> None:
        self.task = self.down.loop.create_task(self.run(routed, plan, first))

    def _fast_settled(self, outcome: Outcome) -> None:
        if not self.fast:
            return
        self.fast = False
        self.down.disarm_try(self)
        plan = self.plan
        assert plan is not None
        address = self.upstream_addr
        # A pooled connection: a reset is a stale connection, not the endpoint's fault.
        self._end_try(plan.runtime, address, outcome, stale=True)
        if outcome is Outcome.DONE or outcome is Outcome.BROKEN:
            if outcome is Outcome.BROKEN:
                self.close_after = True
                self.reason = "upstream_reset_after_response_started"
            self._release_admission()
            self._finish()
            return
        assert self.fast_endpoint is not None
        self._hand_over(None, plan, First(self.fast_endpoint, outcome))

    def _on_fast_timeout(self) -> None:
        conn = self.up
        self.up = None
        if conn is not None:
            conn.abort()
        if self.committed:
            self.reason = "timeout"
        self._fast_settled(Outcome.BROKEN if self.committed else Outcome.TIMEOUT)

    def _fast_cancelled(self) -> None:
        """The client left while the fast path's try was in flight."""
        self.fast = False
        self.down.disarm_try(self)
        conn = self.up
        self.up = None
        if conn is not None:
            conn.abort()
        if self.plan is not None:
            self._end_try(self.plan.runtime, self.upstream_addr, None, stale=False)
        self._release_admission()
        self._finish()

    def _fast_abandon(self) -> None:
        trying = self.fast
        self.fast = False
        self.down.disarm_try(self)
        if trying and self.plan is not None:
            self._end_try(self.plan.runtime, self.upstream_addr, None, stale=False)
        if not self.committed:
            self._local(500, "internal_error")
        self.close_after = True
        self._release_admission()
        if not self.ended:
            self._finish()

    # ---------------------------------------------------------------- general path
    async def _forward(self, plan: Plan, first: First | None) -> None:
        """Tries until one commits a response: pick, connect (breakers), attempt, and on a
        retriable outcome back off and retry elsewhere while policy and budget allow.
        `first` resumes after the fast path (its try's outcome, or its picked endpoint)."""
        runtime, spec, route, deadline = plan.runtime, plan.spec, plan.route, plan.deadline
        resumed = first is not None and first.outcome is not None
        if resumed:
            policy = self.policy  # set by the fast path; retries_left already counts
        else:
            policy = route.retry or plan.vhost.retry
            self.policy = policy
            self.retries_left = policy.num_retries if policy else 0
            self.retry_after_s = None
        backoff = runtime.backoff(policy)
        hash_key: bytes | None = None
        if route.hash_policy and spec.lb in _HASHING:
            key = request_hash_key(route.hash_policy, self.head.headers, plan.target.query,
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
                        conn, with_deadline(plan.up_head, deadline, plan.grpc), route, deadline)
                finally:
                    self._end_try(runtime, endpoint.address, attempt,
                                  stale=reused and not stale_retry_used)
                outcome = attempt
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
