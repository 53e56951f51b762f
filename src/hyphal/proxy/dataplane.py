"""DataPlane: serves a ProxyConfig — binds, keeps and closes listeners; drains and closes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING

from hyphal.proxy.http.codec import Limits
from hyphal.proxy.http.context import ListenerContext, Timeouts
from hyphal.proxy.listeners import Listener, ListenerBindError, bind, needs_rebind
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import ListenerSpec, ProxyConfig
from hyphal.proxy.transport.tls import TlsMaterial
from hyphal.proxy.upstream.cluster import ClusterManager
from hyphal.proxy.upstream.pool import ConnectionPool
from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import Stats

if TYPE_CHECKING:
    from hyphal.proxy.h2.upstream import H2Pool

__all__ = ["DataPlane", "ListenerBindError"]

log = logging.getLogger(__name__)


class DataPlane:
    """Owns the listeners, the upstream pool and cluster state of one sidecar.

    `apply(config)` is make-before-break: new listeners are bound first (a bind failure
    raises ListenerBindError and changes nothing), then the holder is swapped (requests
    already running keep the snapshot they started with), then removed listeners stop
    accepting and their connections drain.

    The HTTP/2 upstream side (`H2Pool`, and `H2Bridge` for HTTP/1.1 requests to HTTP/2
    clusters) is built, and the h2 libraries imported, by the first config with an HTTP/2
    cluster: an HTTP/1.1-only sidecar does not carry them (~1.7 MB RSS).
    """

    def __init__(self, holder: ConfigHolder, tls: TlsMaterial | None, access_log: AccessLog,
                 stats: Stats, limits: Limits | None = None,
                 timeouts: Timeouts | None = None) -> None:
        self.holder = holder
        self.tls = tls
        self.access_log = access_log
        self.stats = stats
        self.limits = limits or Limits()
        self.timeouts = timeouts or Timeouts()
        self.pool = ConnectionPool(tls, stats)
        self.h2_pool: H2Pool | None = None  # see _load_h2
        self.clusters = ClusterManager(self.pool)
        self._listeners: dict[str, Listener] = {}
        self._retired: list[Listener] = []
        self._rng = random.Random()
        self._lock = asyncio.Lock()

    def port_of(self, listener_name: str) -> int:
        """The bound port (useful when a spec asked for port 0)."""
        return self._listeners[listener_name].port

    @property
    def listener_names(self) -> tuple[str, ...]:
        return tuple(self._listeners)

    async def apply(self, config: ProxyConfig) -> None:
        async with self._lock:
            if self.h2_pool is None and any(c.http2 for c in config.clusters.values()):
                self._load_h2()
            wanted = {spec.name: spec for spec in config.listeners}
            fresh: dict[str, Listener] = {}
            replaced: list[Listener] = []
            try:
                for name, spec in wanted.items():
                    current = self._listeners.get(name)
                    if current is not None and not needs_rebind(current.ctx.spec, spec):
                        continue
                    if current is not None:
                        # Same name, new socket: free the port first when it is the same one.
                        if (current.ctx.spec.host, current.ctx.spec.port) == (spec.host, spec.port):
                            await current.stop_accepting()
                            current.drain()
                            replaced.append(current)
                            del self._listeners[name]
                    fresh[name] = await bind(self._context(spec))
            except ListenerBindError:
                for listener in fresh.values():
                    await listener.stop_accepting()
                raise
            self.holder.swap(config)
            for name, spec in wanted.items():
                kept = self._listeners.get(name)
                if kept is not None and name not in fresh:
                    kept.ctx.spec = spec
            for name, listener in list(self._listeners.items()):
                if name not in wanted or name in fresh:
                    await listener.stop_accepting()
                    listener.drain()
                    self._retired.append(listener)
                    del self._listeners[name]
            self._retired.extend(replaced)
            self._listeners.update(fresh)
            self.clusters.retain(set(config.clusters))
            for listener in self._retired:
                if not listener.ctx.connections:
                    listener.stop_sweeper()
            self._retired = [lst for lst in self._retired if lst.ctx.connections]

    def _load_h2(self) -> None:
        from hyphal.proxy.h2.bridge import H2Bridge
        from hyphal.proxy.h2.upstream import H2Pool

        self.h2_pool = H2Pool(self.tls, self.stats)
        self.pool.h2 = H2Bridge(self.h2_pool)  # HTTP/1.1 requests to HTTP/2 clusters
        for listener in (*self._listeners.values(), *self._retired):
            listener.ctx.h2_pool = self.h2_pool

    def _context(self, spec: ListenerSpec) -> ListenerContext:
        return ListenerContext(spec=spec, holder=self.holder, clusters=self.clusters,
                               pool=self.pool, tls=self.tls, stats=self.stats,
                               access_log=self.access_log, limits=self.limits,
                               timeouts=self.timeouts, rng=self._rng, h2_pool=self.h2_pool)

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (up to `timeout` seconds)."""
        listeners = list(self._listeners.values()) + self._retired
        for listener in listeners:
            await listener.stop_accepting()
            listener.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and any(lst.ctx.connections for lst in listeners):
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        listeners = list(self._listeners.values()) + self._retired
        for listener in listeners:
            await listener.stop_accepting()
            listener.stop_sweeper()
            listener.abort_all()
        for listener in listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.server.wait_closed(), 1.0)
        self.pool.close_all()
        if self.h2_pool is not None:
            self.h2_pool.close_all()
        self._listeners.clear()
        self._retired.clear()
        self.access_log.flush()
