"""Request mirroring (Envoy's request_mirror_policies, Istio's mirror/mirrors): fire and forget.

A mirrored request is a copy of the original (head and kept body) sent to the mirror
cluster with `-shadow` appended to its Host, after the original's response has been sent,
on a task of its own: its answer is read and dropped, its failure only counted, and neither
its slowness nor its failure can touch the original exchange. A request whose body was too
big to keep (see the exchange's replay limit) is not mirrored. At most `max_in_flight`
mirrors run at once per sidecar; beyond that new mirrors are dropped and counted
(`hyphal_mirror_dropped_total`), so a slow mirror target cannot pile up memory or sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hyphal.proxy.http.codec import ResponseHead
from hyphal.proxy.runtime.tables import ClusterSpec
from hyphal.proxy.upstream.cluster import ClusterRuntime
from hyphal.proxy.upstream.pool import ConnectFailure, ConnectionPool, UpstreamConnection

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64
DEFAULT_TIMEOUT_S = 15.0


class _Discard:
    """An UpstreamSink that reads a response and drops it; the connection goes back to the
    pool when the response ended cleanly."""

    __slots__ = ("conn", "done", "pool", "spec", "status")

    def __init__(self, pool: ConnectionPool, conn: UpstreamConnection, spec: ClusterSpec,
                 done: asyncio.Future[int]) -> None:
        self.pool = pool
        self.conn = conn
        self.spec = spec
        self.done = done
        self.status = 0

    def _settle(self, status: int) -> None:
        if not self.done.done():
            self.done.set_result(status)

    def on_response_head(self, head: ResponseHead) -> None:
        if head.status >= 200:
            self.status = head.status

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_end(self, keep_alive: bool) -> None:
        if not self.status:
            return  # an informational response; the final one follows
        self.pool.release(self.conn, keep_alive, self.spec.max_requests_per_connection)
        self._settle(self.status)

    def on_upstream_upgrade(self, rest: bytes) -> None:
        self.conn.abort()
        self._settle(0)

    def on_tunnel_data(self, data: bytes) -> None:
        pass

    def on_upstream_error(self, detail: str) -> None:
        self.conn.abort()
        self._settle(0)

    def on_upstream_lost(self) -> None:
        self._settle(0)

    def on_upstream_flush(self) -> None:
        pass

    def upstream_pause_writing(self) -> None:
        pass

    def upstream_resume_writing(self) -> None:
        pass


class Mirrors:
    """The sidecar's mirror sender (one per data plane, bounded)."""

    __slots__ = ("_tasks", "max_in_flight", "pool")

    def __init__(self, pool: ConnectionPool, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.pool = pool
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def send(self, runtime: ClusterRuntime, head: bytes, body: bytes,
             timeout_s: float | None) -> bool:
        """Start one mirrored request (`head` already carries the shadow Host and framing).
        False when it was dropped because too many mirrors are in flight."""
        stats = self.pool.stats
        name = runtime.spec.name
        if len(self._tasks) >= self.max_in_flight:
            stats.count("hyphal_mirror_dropped_total", name)
            return False
        task = asyncio.get_running_loop().create_task(
            self._run(runtime, head + body, timeout_s or DEFAULT_TIMEOUT_S))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        stats.count("hyphal_mirror_requests_total", name)
        return True

    async def _run(self, runtime: ClusterRuntime, data: bytes, timeout_s: float) -> None:
        spec = runtime.spec
        conn: UpstreamConnection | None = None
        status = 0
        try:
            async with asyncio.timeout(timeout_s):
                endpoint = runtime.pick()
                if endpoint is None:
                    return
                conn = self.pool.idle_connection(endpoint, spec)
                if conn is None:
                    conn, _ = await self.pool.acquire(endpoint, spec, spec.connect_timeout_s)
                done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                conn.begin(_Discard(self.pool, conn, spec, done), False)
                conn.write(data)
                status = await done
                conn = None  # released (or lost) by the sink
        except (TimeoutError, ConnectFailure, OSError) as exc:
            log.debug("mirror to %s failed: %s", spec.name, exc)
        finally:
            if conn is not None:
                conn.abort()
            if not 200 <= status < 500:
                self.pool.stats.count("hyphal_mirror_failed_total", spec.name)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
