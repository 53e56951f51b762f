"""Tries of one exchange: connections within the breakers, retry decisions, backoff, mirrors.

`Attempts` is the part of an exchange that both of its paths share: the general path (a
task, `Exchange._forward`) awaits `_attempt_on`; the fast path (`Exchange._fast_attempt`, no
task) writes the request with `_send_request` and is driven by upstream callbacks alone.
Either way a try is accounted by `_end_try`, and a retry is decided by `_may_retry` (status
retries by `_retry_status` from the response callback, before anything is committed).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from hyphal.proxy.http.codec import RequestHead, ResponseHead
from hyphal.proxy.http.headers import LAST_CHUNK, encode_chunk
from hyphal.proxy.http.relay import BROKEN, DONE, RESET, RETRY, TIMEOUT, Outcome, Relay
from hyphal.proxy.http.request import redirect_location, upstream_request_head
from hyphal.proxy.resilience.backoff import Backoff, FailureKind
from hyphal.proxy.router import Target
from hyphal.proxy.runtime.tables import (
    ClusterSpec,
    EndpointSpec,
    ProxyConfig,
    RedirectAction,
    Route,
    VirtualHost,
    WeightedCluster,
)
from hyphal.proxy.upstream.cluster import ClusterRuntime
from hyphal.proxy.upstream.policy import retry_after, shadow_authority
from hyphal.proxy.upstream.pool import UpstreamConnection


class Attempts(Relay):
    """Per-try machinery of an exchange (see the module docstring)."""

    __slots__ = ()  # its state is in Relay

    def _release_admission(self) -> None:
        if self.admitted:
            self.admitted = False
            if self.runtime is not None:
                self.runtime.release()

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
                 stale: bool, now: float | None = None) -> None:
        """Account for one finished try: in-flight counts, outlier detection, latency."""
        if self.retry_held:
            self.retry_held = False
            runtime.release_retry()
        if now is None:
            now = time.monotonic()
        result: int | FailureKind | None
        if outcome is DONE or outcome is RETRY:
            result = self.status
        elif outcome is TIMEOUT:
            result = FailureKind.TIMEOUT
        elif outcome is RESET:
            result = None if stale else FailureKind.RESET  # a stale pooled connection
        elif outcome is BROKEN:
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

    def _send_request(self, conn: UpstreamConnection, up_head: bytes,
                      now: float | None = None) -> None:
        """Bind the exchange to `conn` and write the head and the body so far, at once.
        `now`: the caller's monotonic time, when it has just read it."""
        self.up = conn
        self.skip_informational = False
        conn.begin(self, self.head.method == b"HEAD")
        chunks = self.chunks
        if chunks or self.head.chunked:
            framed = self.head.chunked
            parts = [up_head]
            for chunk in chunks:
                parts.append(encode_chunk(chunk) if framed else chunk)
            if self.req_done and framed:
                parts.append(LAST_CHUNK)
            conn.write(b"".join(parts))
            if not self.replayable:
                chunks.clear()
                self.chunk_bytes = 0
        else:
            conn.write(up_head)
        self.down.upstream_bound(conn)
        self.upstream_started = time.monotonic() if now is None else now

    def _try_due(self, deadline: float | None) -> float | None:
        """Monotonic time by which the try just sent must end (per-try timeout and the
        deadline), None: no limit."""
        per_try = self.policy.per_try_timeout_s if self.policy else None
        if per_try is None:
            return deadline
        due = self.upstream_started + max(per_try, 0.0)
        return due if deadline is None or due < deadline else deadline

    async def _attempt_on(self, conn: UpstreamConnection, up_head: bytes, route: Route,
                          deadline: float | None) -> Outcome:
        down = self.down
        fut: asyncio.Future[Outcome] = down.loop.create_future()
        self.attempt = fut
        self._send_request(conn, up_head)
        due = self._try_due(deadline)
        if due is not None:
            down.arm_try(self, due)
        try:
            return await fut
        except asyncio.CancelledError:
            if self.up is conn:
                conn.abort()
                self.up = None
            raise
        finally:
            down.disarm_try(self)
            self.attempt = None

    def on_try_timeout(self) -> None:
        fut = self.attempt
        if fut is not None:
            self._on_timeout(fut)
        elif self.fast:
            self._on_fast_timeout()

    def _on_fast_timeout(self) -> None:
        """The fast path's try took too long (Exchange)."""

    def _on_timeout(self, fut: asyncio.Future[Outcome]) -> None:
        if fut.done():
            return
        conn = self.up
        self.up = None
        if conn is not None:
            conn.abort()
        fut.set_result(BROKEN if self.committed else TIMEOUT)
        if self.committed:
            self.reason = "timeout"

    def _redirect(self, action: RedirectAction, target: Target) -> None:
        assert self.route is not None
        location = redirect_location(action, self.route, target)
        self._local(action.status, "redirect", body=b"", extra=[(b"location", location)])
