"""The idle pool in memory: checkout is most-recent-first per (endpoint, TLS expectation),
and the per-endpoint lookup cache never hands out a connection to the wrong key."""

from __future__ import annotations

import asyncio
from typing import Any

from hyphal.proxy.runtime.tables import ClusterSpec, EndpointSpec, UpstreamTls
from hyphal.proxy.upstream.pool import ConnectionPool, UpstreamConnection, pool_key
from hyphal.telemetry.stats import Stats


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def pooled(pool: ConnectionPool, endpoint: EndpointSpec,
           cluster: ClusterSpec) -> UpstreamConnection:
    conn = UpstreamConnection(pool, pool_key(endpoint, cluster), cluster.name)
    conn.connection_made(Transport())
    pool._all.add(conn)
    pool.release(conn, True, None)
    return conn


def test_checkout_is_most_recent_first_and_keyed_by_tls_expectation() -> None:
    pool = ConnectionPool(None, Stats())
    endpoint = EndpointSpec("127.0.0.1", 9)
    plain = ClusterSpec("plain", (endpoint,))
    mtls = ClusterSpec("mtls", (endpoint,), tls=UpstreamTls("a.svc", frozenset({"a"})))
    first, second = pooled(pool, endpoint, plain), pooled(pool, endpoint, plain)
    assert pool.idle_connection(endpoint, mtls) is None  # same endpoint, other identity
    assert pool.idle_connection(endpoint, plain) is second
    secure = pooled(pool, endpoint, mtls)
    assert pool.idle_connection(endpoint, plain) is first
    assert pool.idle_connection(endpoint, plain) is None
    assert pool.idle_connection(endpoint, mtls) is secure
    # An equal endpoint from a newer config snapshot finds the same connections.
    again = pooled(pool, endpoint, plain)
    assert pool.idle_connection(EndpointSpec("127.0.0.1", 9), ClusterSpec(
        "plain", (endpoint,))) is again


def test_closed_or_expired_idle_connections_are_skipped_and_close_idle_forgets_all() -> None:
    pool = ConnectionPool(None, Stats())
    endpoint = EndpointSpec("127.0.0.1", 9)
    cluster = ClusterSpec("c", (endpoint,), idle_timeout_s=10.0)
    old, fresh = pooled(pool, endpoint, cluster), pooled(pool, endpoint, cluster)
    assert fresh.transport is not None
    fresh.transport.close()
    old.idle_since -= 60  # idle longer than the cluster allows
    assert pool.idle_connection(endpoint, cluster) is None
    assert old.closed and fresh.closed
    kept = pooled(pool, endpoint, cluster)
    pool.close_idle()
    assert kept.closed and pool.idle_connection(endpoint, cluster) is None
    after = pooled(pool, endpoint, cluster)  # the pool still works after close_idle
    assert pool.idle_connection(endpoint, cluster) is after
