"""Runtime tables: the compiled, per-request-ready form of one xDS snapshot (no protobuf inside).

The proxy-control side compiles Envoy protos into these frozen values once per snapshot;
the data plane only reads them. Names follow docs/xds-conventions.md. Durations are float
seconds; `None` means "no limit / not configured" unless a field says otherwise.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Union

from hyphal.proxy.runtime.matchers import (
    HeaderMatcher,
    PathKind,
    PathMatch,
    QueryMatcher,
    StringKind,
    StringMatch,
    parse_query,
)
from hyphal.proxy.runtime.rbac import (
    AndRule,
    AnyRule,
    AuthenticatedRule,
    HeaderRule,
    MetadataRule,
    MethodRule,
    NotRule,
    OrRule,
    PathRule,
    PortRule,
    PrincipalRule,
    RbacEngine,
    RbacPolicy,
    RbacRequest,
    Rule,
)

if TYPE_CHECKING:
    from hyphal.proxy.filters.chain import RequestFilter

__all__ = [
    "AndRule", "AnyRule", "AuthenticatedRule", "CircuitBreaker", "ClusterAction", "ClusterSpec",
    "DirectResponse", "DownstreamTls", "EndpointSpec", "FaultSpec", "HashPolicy", "HeaderMatcher",
    "HeaderRule", "HeaderValue", "HealthCheckSpec", "LbPolicy", "ListenerKind", "ListenerSpec",
    "MetadataRule", "MethodRule", "MirrorPolicy", "NotRule", "OrRule", "OutlierSpec", "PathKind",
    "PathMatch",
    "PathRule", "PortRule", "PrincipalRule", "ProxyConfig", "QueryMatcher", "RbacEngine",
    "RbacPolicy", "RbacRequest", "RedirectAction", "RegexRewrite", "RetryPolicy", "Route",
    "RouteAction", "RouteMatch", "RouteTable", "Rule", "StringKind", "StringMatch",
    "UpstreamTls", "VirtualHost", "WeightedCluster", "frozen_map", "parse_query",
]


def frozen_map(items: Mapping[str, object] | None = None) -> Mapping[str, object]:
    """A read-only mapping view (use for every Mapping field built by hand)."""
    return MappingProxyType(dict(items or {}))


# ---------------------------------------------------------------- routes


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Envoy RouteMatch: path specifier AND every header matcher AND every query matcher.

    `methods` is a shortcut for the common `:method` exact header matcher (None = any).
    """

    path: PathMatch = PathMatch(PathKind.PREFIX, "/")
    headers: tuple[HeaderMatcher, ...] = ()
    query: tuple[QueryMatcher, ...] = ()
    methods: frozenset[str] | None = None

    def matches(
        self, method: str, path: str, query: str, headers: Mapping[str, str] | None
    ) -> bool:
        """`path` excludes the query string; `headers` lower-case keys incl. `:method`,
        `:authority`, `:path` (only consulted when header matchers exist)."""
        if self.methods is not None and method not in self.methods:
            return False
        if not self.path.matches(path):
            return False
        if self.headers:
            if headers is None:
                return False
            for header in self.headers:
                if not header.matches(headers):
                    return False
        if self.query:
            params = parse_query(query)
            for matcher in self.query:
                if not matcher.matches(params):
                    return False
        return True


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    name: str
    weight: int
    request_headers_to_add: tuple[HeaderValue, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterAction:
    """Forward to one of `clusters` by weight (one cluster = weight irrelevant)."""

    clusters: tuple[WeightedCluster, ...]
    cumulative: tuple[int, ...] = field(default=(), compare=False, repr=False)
    total: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not self.clusters:
            raise ValueError("a route action needs at least one cluster")
        running = 0
        cumulative: list[int] = []
        for cluster in self.clusters:
            if cluster.weight < 0:
                raise ValueError(f"cluster {cluster.name!r}: weight must be >= 0")
            running += cluster.weight
            cumulative.append(running)
        if running == 0:
            raise ValueError("weighted_clusters: at least one weight must be non-zero")
        object.__setattr__(self, "cumulative", tuple(cumulative))
        object.__setattr__(self, "total", running)

    @classmethod
    def single(cls, name: str) -> ClusterAction:
        return cls((WeightedCluster(name, 1),))

    def pick(self, draw: int) -> WeightedCluster:
        """`draw` is a uniform integer in [0, total)."""
        if len(self.clusters) == 1:
            return self.clusters[0]
        return self.clusters[bisect.bisect_right(self.cumulative, draw)]


@dataclass(frozen=True, slots=True)
class RedirectAction:
    """Envoy RedirectAction; None fields keep the request's value."""

    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    prefix_rewrite: str | None = None
    status: int = 301
    strip_query: bool = False


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: bytes = b""


RouteAction = Union[ClusterAction, RedirectAction, DirectResponse]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Envoy RetryPolicy. `retry_on` holds Envoy's names: 5xx, gateway-error, reset,
    connect-failure, refused-stream, retriable-status-codes, retriable-4xx."""

    num_retries: int = 2
    per_try_timeout_s: float | None = None
    retry_on: frozenset[str] = frozenset({"connect-failure", "refused-stream", "unavailable",
                                          "cancelled", "retriable-status-codes"})
    retriable_status_codes: frozenset[int] = frozenset({503})
    base_interval_s: float = 0.025
    max_interval_s: float = 0.25

    @classmethod
    def istio_default(cls) -> RetryPolicy:
        return cls()


@dataclass(frozen=True, slots=True)
class HeaderValue:
    """A header to add; `append=False` replaces any existing value."""

    name: str
    value: str
    append: bool = True


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    pattern: re.Pattern[str]
    substitution: str


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    cluster: str
    fraction: float = 1.0


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """HTTPFault: fractions are in [0, 1]. Abort wins over delay when both hit."""

    delay_s: float | None = None
    delay_fraction: float = 0.0
    abort_status: int | None = None
    abort_grpc_status: int | None = None
    abort_fraction: float = 0.0


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """One hash policy term (first non-empty wins, as Envoy's `terminal` chain)."""

    header: str | None = None
    cookie: str | None = None
    query_parameter: str | None = None
    source_ip: bool = False
    # A cookie term whose cookie is absent makes one (sticky sessions); None ttl = session.
    cookie_ttl_s: float | None = None
    cookie_path: str | None = "/"


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: RouteMatch
    action: RouteAction
    timeout_s: float | None = 15.0
    retry: RetryPolicy | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: RegexRewrite | None = None
    host_rewrite: str | None = None
    request_headers_to_add: tuple[HeaderValue, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValue, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()
    mirrors: tuple[MirrorPolicy, ...] = ()
    fault: FaultSpec | None = None
    hash_policy: tuple[HashPolicy, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    request_headers_to_add: tuple[HeaderValue, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValue, ...] = ()
    response_headers_to_remove: tuple[str, ...] = ()
    retry: RetryPolicy | None = None
    # The first route's path prefix when that route matches on it alone (case-sensitive, no
    # method, header or query matchers): then `select_route` needs no matcher call for it.
    leading_prefix: str | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.routes:
            match = self.routes[0].match
            path = match.path
            if (path.kind is PathKind.PREFIX and path.case_sensitive and match.methods is None
                    and not match.headers and not match.query):
                object.__setattr__(self, "leading_prefix", path.value)

    def find_route(
        self, method: str, path: str, query: str, headers: Mapping[str, str] | None
    ) -> Route | None:
        for route in self.routes:
            if route.match.matches(method, path, query, headers):
                return route
        return None


@dataclass(frozen=True, slots=True)
class RouteTable:
    """A RouteConfiguration with Envoy's domain lookup: exact, then longest `*.suffix`,
    then longest `prefix*`, then `*`. Build with `RouteTable.build`."""

    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    exact: Mapping[str, VirtualHost] = field(default_factory=dict, compare=False, repr=False)
    suffixes: tuple[tuple[str, VirtualHost], ...] = field(default=(), compare=False, repr=False)
    prefixes: tuple[tuple[str, VirtualHost], ...] = field(default=(), compare=False, repr=False)
    default: VirtualHost | None = field(default=None, compare=False, repr=False)
    needs_headers: bool = field(default=False, compare=False, repr=False)
    # `default` when it is the only virtual host any authority can reach (a catch-all
    # table): then `select_route` skips the domain lookup.
    only: VirtualHost | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.exact and not self.suffixes and not self.prefixes:
            object.__setattr__(self, "only", self.default)

    @classmethod
    def build(cls, name: str, virtual_hosts: tuple[VirtualHost, ...]) -> RouteTable:
        exact: dict[str, VirtualHost] = {}
        suffixes: list[tuple[str, VirtualHost]] = []
        prefixes: list[tuple[str, VirtualHost]] = []
        default: VirtualHost | None = None
        needs_headers = False
        for vhost in virtual_hosts:
            needs_headers = needs_headers or any(r.match.headers for r in vhost.routes)
            for domain in vhost.domains:
                domain = domain.lower()
                if domain == "*":
                    if default is None:
                        default = vhost
                elif domain.startswith("*"):
                    suffixes.append((domain[1:], vhost))
                elif domain.endswith("*"):
                    prefixes.append((domain[:-1], vhost))
                elif domain in exact:
                    raise ValueError(
                        f"route config {name!r}: domain {domain!r} is in virtual hosts "
                        f"{exact[domain].name!r} and {vhost.name!r}; each domain must be unique"
                    )
                else:
                    exact[domain] = vhost
        suffixes.sort(key=lambda item: -len(item[0]))
        prefixes.sort(key=lambda item: -len(item[0]))
        return cls(name, virtual_hosts, MappingProxyType(exact), tuple(suffixes),
                   tuple(prefixes), default, needs_headers)

    def find_virtual_host(self, authority: str) -> VirtualHost | None:
        """Look up by authority as sent (with or without port), case-insensitively."""
        exact = self.exact
        # Domains are kept lower-case, so an authority found as sent is its own lower case.
        vhost = exact.get(authority)
        if vhost is not None:
            return vhost
        host = authority.lower()
        if host != authority:
            vhost = exact.get(host)
            if vhost is not None:
                return vhost
        # Envoy retries without the port when the exact form misses.
        if host.startswith("["):
            bare = host[: host.find("]") + 1] if "]" in host else host
        else:
            bare = host.rsplit(":", 1)[0] if ":" in host else host
        if bare != host:
            vhost = exact.get(bare)
            if vhost is not None:
                return vhost
        for suffix, candidate in self.suffixes:
            if host.endswith(suffix) or bare.endswith(suffix):
                return candidate
        for prefix, candidate in self.prefixes:
            if host.startswith(prefix):
                return candidate
        return self.default


# ---------------------------------------------------------------- clusters


class LbPolicy(StrEnum):
    ROUND_ROBIN = "round_robin"
    LEAST_REQUEST = "least_request"
    RANDOM = "random"
    RING_HASH = "ring_hash"
    MAGLEV = "maglev"
    PEAK_EWMA = "peak_ewma"  # hyphal's latency-aware P2C (a LEAST_REQUEST cluster + marker)


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    host: str
    port: int
    weight: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    identity: str | None = None
    healthy: bool = True
    # host:port, made once: the request path reads it (not compared, hashed or shown).
    address: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", f"{self.host}:{self.port}")


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """mTLS to the upstream: present our `default` cert, verify against ROOTCA, then require
    the peer's URI SAN to be in `expected_sans` (empty = any identity from the mesh CA)."""

    sni: str
    expected_sans: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class DownstreamTls:
    """`permissive`: plaintext is accepted on the same port too (PeerAuthentication
    PERMISSIVE: tls_inspector with a `tls` and a `raw_buffer` filter chain)."""

    require_client_cert: bool = True
    permissive: bool = False


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Envoy's default thresholds."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@dataclass(frozen=True, slots=True)
class OutlierSpec:
    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    interval_s: float = 10.0
    base_ejection_time_s: float = 30.0
    max_ejection_percent: int = 10
    max_ejection_time_s: float = 300.0
    # Envoy's common_lb_config.healthy_panic_threshold (Istio's minHealthPercent).
    healthy_panic_threshold: float = 50.0
    # One host may always be ejected even when max_ejection_percent rounds to zero hosts
    # (10% of 3): what Envoy does in practice and what Istio users expect.
    always_eject_one_host: bool = True


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    """An HTTP GET of `path` expecting 2xx, or a plain TCP connect when `tcp`."""

    path: str = "/"
    interval_s: float = 5.0
    timeout_s: float = 1.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1
    tcp: bool = False


@dataclass(frozen=True, slots=True)
class H2Keepalive:
    """Envoy's http2_protocol_options.connection_keepalive: a PING every `interval_s` (plus
    up to `jitter` of it), the connection closed when nothing comes back within `timeout_s`."""

    interval_s: float
    timeout_s: float
    jitter: float = 0.15


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    name: str
    endpoints: tuple[EndpointSpec, ...]
    lb: LbPolicy = LbPolicy.ROUND_ROBIN
    tls: UpstreamTls | None = None
    connect_timeout_s: float = 5.0
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    outlier: OutlierSpec | None = None
    idle_timeout_s: float | None = 3600.0
    max_requests_per_connection: int | None = None
    health_check: HealthCheckSpec | None = None
    lb_metadata: Mapping[str, str] = field(default_factory=dict)
    ring_min_size: int = 1024  # ring_hash_lb_config.minimum_ring_size
    maglev_table_size: int = 65537  # maglev_lb_config.table_size (a prime)
    # Istio telemetry labels for the destination (service FQDN, workload, ...).
    service: str = ""
    # HTTP/2 to the endpoints (Envoy's explicit_http_config.http2_protocol_options): ALPN
    # `h2` over TLS, prior knowledge (h2c) in plaintext; streams share one connection.
    http2: bool = False
    max_concurrent_streams: int = 100
    h2_keepalive: H2Keepalive | None = None


# ---------------------------------------------------------------- listeners


class ListenerKind(StrEnum):
    OUTBOUND_HTTP = "outbound_http"
    OUTBOUND_TCP = "outbound_tcp"
    INBOUND_HTTP = "inbound_http"
    INBOUND_TCP = "inbound_tcp"


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One listening socket. HTTP kinds name an RDS `route_config` or carry `inline_routes`;
    TCP kinds carry `tcp_cluster`. Inbound kinds normally have `tls` (mTLS required)."""

    name: str
    host: str
    port: int
    kind: ListenerKind
    tls: DownstreamTls | None = None
    route_config: str | None = None
    inline_routes: RouteTable | None = None
    rbac: RbacEngine | None = None
    tcp_cluster: str | None = None
    stat_prefix: str = ""
    # jwt_authn, local_ratelimit (hyphal.proxy.filters), run before rbac; () costs nothing
    request_filters: tuple[RequestFilter, ...] = field(default=(), compare=False)
    # Transparent capture (hyphal.proxy.capture): `use_original_dst` listeners hand each
    # connection to the listener matching its original destination; `bind_to_port=False`
    # listeners only receive such hand-offs, at `host:port` or an `additional_addresses` one.
    use_original_dst: bool = False
    bind_to_port: bool = True
    additional_addresses: tuple[tuple[str, int], ...] = ()
    # Derived from `kind` once (read on every request).
    is_http: bool = field(default=False, init=False, compare=False, repr=False)
    is_inbound: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        kind = self.kind
        object.__setattr__(self, "is_http",
                           kind in (ListenerKind.OUTBOUND_HTTP, ListenerKind.INBOUND_HTTP))
        object.__setattr__(self, "is_inbound",
                           kind in (ListenerKind.INBOUND_HTTP, ListenerKind.INBOUND_TCP))


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """One complete, consistent snapshot. `identity` is our own SPIFFE id (for XFCC `By=`);
    `workload`/`namespace` feed Istio telemetry labels."""

    version: str
    listeners: tuple[ListenerSpec, ...] = ()
    routes: Mapping[str, RouteTable] = field(default_factory=dict)
    clusters: Mapping[str, ClusterSpec] = field(default_factory=dict)
    identity: str = ""
    workload: str = "unknown"
    namespace: str = "default"

    def route_table_for(self, listener: ListenerSpec) -> RouteTable | None:
        if listener.inline_routes is not None:
            return listener.inline_routes
        if listener.route_config is None:
            return None
        return self.routes.get(listener.route_config)

    def validate(self) -> list[str]:
        """Dangling references, as human-readable problems (empty list = consistent)."""
        problems: list[str] = []
        for listener in self.listeners:
            if listener.is_http:
                if listener.inline_routes is None and listener.route_config is None:
                    problems.append(f"listener {listener.name!r}: no route_config or inline routes")
            elif listener.tcp_cluster is None:
                problems.append(f"listener {listener.name!r}: TCP listener without tcp_cluster")
        return problems
