"""DestinationRule -> resolved cluster settings: which rule applies, subset and port overrides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from hyphal.config.models import DestinationRule
from hyphal.config.models.destination_rule import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHashLB,
    HealthCheck,
    HTTPSettings,
    LoadBalancerSettings,
    OutlierDetection,
    PortTrafficPolicy,
    TCPSettings,
    TrafficPolicy,
)
from hyphal.control.translate.clusters import (
    ClusterParams,
    HealthCheckParams,
    LbParams,
    OutlierParams,
    PoolParams,
)
from hyphal.control.translate.inputs import MeshIndex, visible
from hyphal.control.translate.pb import Message, duration, route_components_pb2

_SIMPLE = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "PASSTHROUGH": "ROUND_ROBIN",  # no original-destination clusters in hyphal
    "PEAK_EWMA": "PEAK_EWMA",
}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Resolved:
    """The effective policy fields for one (host, port, subset), after all overrides."""

    params: ClusterParams
    consistent_hash: ConsistentHashLB | None
    subset_labels: dict[str, str] | None  # None: the whole service; {} for a label-less subset


def pick_rule(index: MeshIndex, host: str, node_ns: str, svc_ns: str) -> DestinationRule | None:
    """Istio's lookup: a visible rule for `host` in the client's namespace, the service's, any."""
    found = [
        dr
        for dr in index.destination_rules
        if index.resolve_host(dr.spec.host, dr.namespace) == host
        and visible(dr.spec.export_to, dr.namespace, node_ns)
    ]
    for ns in (node_ns, svc_ns):
        for dr in found:
            if dr.namespace == ns:
                return dr
    return found[0] if found else None


def _layers(tp: TrafficPolicy | None, port: int) -> list[TrafficPolicy | PortTrafficPolicy]:
    if tp is None:
        return []
    out: list[TrafficPolicy | PortTrafficPolicy] = [tp]
    out += [p for p in tp.port_level_settings if p.port.number == port]
    return out


def _lb(lb: LoadBalancerSettings | None) -> tuple[LbParams, ConsistentHashLB | None]:
    if lb is None:
        return LbParams(), None
    ch = lb.consistent_hash
    if ch is not None:
        if ch.maglev is not None:
            return LbParams("MAGLEV", maglev_table_size=ch.maglev.table_size), ch
        ring = ch.ring_hash.minimum_ring_size if ch.ring_hash else ch.minimum_ring_size
        return LbParams("RING_HASH", minimum_ring_size=ring), ch
    return LbParams(_SIMPLE.get(lb.simple or "ROUND_ROBIN", "ROUND_ROBIN")), None


def _over(new: T | None, old: T | None) -> T | None:
    return new if new is not None else old


def _or(value: T | None, default: T) -> T:
    return value if value is not None else default


def _seconds(d: timedelta | None) -> float | None:
    return None if d is None else d.total_seconds()


def _pool(cp: ConnectionPoolSettings | None) -> PoolParams:
    default = PoolParams()
    if cp is None:
        return default
    tcp = cp.tcp if cp.tcp is not None else TCPSettings()
    http = cp.http if cp.http is not None else HTTPSettings()
    return PoolParams(
        max_connections=_or(tcp.max_connections, default.max_connections),
        max_pending_requests=_or(http.http1_max_pending_requests, default.max_pending_requests),
        max_requests=_or(http.http2_max_requests, default.max_requests),
        max_retries=_or(http.max_retries, default.max_retries),
        connect_timeout=_or(_seconds(tcp.connect_timeout), default.connect_timeout),
        idle_timeout=_seconds(_over(http.idle_timeout, tcp.idle_timeout)),
        # 0 means unlimited in Istio
        max_requests_per_connection=http.max_requests_per_connection or None,
    )


def _outlier(od: OutlierDetection | None) -> OutlierParams | None:
    if od is None:
        return None
    default = OutlierParams()
    return OutlierParams(
        consecutive_5xx=od.consecutive_5xx_errors,
        consecutive_gateway_failure=od.consecutive_gateway_errors,
        interval=_or(_seconds(od.interval), default.interval),
        base_ejection_time=_or(_seconds(od.base_ejection_time), default.base_ejection_time),
        max_ejection_percent=_or(od.max_ejection_percent, default.max_ejection_percent),
        min_health_percent=od.min_health_percent,
    )


def _health(hc: HealthCheck | None) -> HealthCheckParams | None:
    if hc is None:
        return None
    return HealthCheckParams(
        path=hc.path,
        interval=hc.interval.total_seconds(),
        timeout=hc.timeout.total_seconds(),
        unhealthy_threshold=hc.unhealthy_threshold,
        healthy_threshold=hc.healthy_threshold,
    )


def resolve(rule: DestinationRule | None, port: int, subset: str) -> Resolved | None:
    """Effective settings for a cluster; None when `subset` is not defined by the rule."""
    layers: list[TrafficPolicy | PortTrafficPolicy] = []
    labels: dict[str, str] | None = None
    if rule is not None:
        layers += _layers(rule.spec.traffic_policy, port)
    if subset:
        ss = rule.spec.subset(subset) if rule is not None else None
        if ss is None:
            return None
        labels = dict(ss.labels)
        layers += _layers(ss.traffic_policy, port)
    lb_settings: LoadBalancerSettings | None = None
    cp: ConnectionPoolSettings | None = None
    od: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    hc: HealthCheck | None = None
    for layer in layers:  # later layers override earlier ones field by field, as in Istio
        lb_settings = _over(layer.load_balancer, lb_settings)
        cp = _over(layer.connection_pool, cp)
        od = _over(layer.outlier_detection, od)
        tls = _over(layer.tls, tls)
        hc = _over(layer.health_check, hc)
    lb, ch = _lb(lb_settings)
    pool = _pool(cp)
    outlier = _outlier(od)
    health = _health(hc)
    tls_disabled = tls is not None and tls.mode == "DISABLE"
    return Resolved(
        params=ClusterParams(
            lb=lb, pool=pool, outlier=outlier, health_check=health, tls_disabled=tls_disabled
        ),
        consistent_hash=ch,
        subset_labels=labels,
    )


def hash_policies(ch: ConsistentHashLB | None) -> Sequence[Message]:
    """The route's hash_policy for a consistent-hash destination (empty otherwise)."""
    if ch is None:
        return ()
    hp = route_components_pb2.RouteAction.HashPolicy()
    if ch.http_header_name is not None:
        hp.header.header_name = ch.http_header_name
    elif ch.http_cookie is not None:
        hp.cookie.name = ch.http_cookie.name
        if ch.http_cookie.ttl is not None:
            hp.cookie.ttl.CopyFrom(duration(ch.http_cookie.ttl.total_seconds()))
        if ch.http_cookie.path is not None:
            hp.cookie.path = ch.http_cookie.path
    elif ch.use_source_ip:
        hp.connection_properties.source_ip = True
    elif ch.http_query_parameter_name is not None:
        hp.query_parameter.name = ch.http_query_parameter_name
    return (hp,)
