"""DestinationRule -> resolved cluster settings: which rule applies, subset and port overrides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hyphal.config.models import DestinationRule
from hyphal.config.models.destination_rule import (
    ConsistentHashLB,
    LoadBalancerSettings,
    PortTrafficPolicy,
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

_FIELDS = ("load_balancer", "connection_pool", "outlier_detection", "tls", "health_check")


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
    eff: dict[str, object] = {}
    for layer in layers:  # later layers override earlier ones field by field, as in Istio
        for f in _FIELDS:
            v = getattr(layer, f, None)
            if v is not None:
                eff[f] = v
    lb, ch = _lb(eff.get("load_balancer"))  # type: ignore[arg-type]
    pool = PoolParams()
    cp = eff.get("connection_pool")
    if cp is not None:
        tcp, http = getattr(cp, "tcp", None), getattr(cp, "http", None)
        kw: dict[str, object] = {}
        if tcp is not None:
            if tcp.max_connections is not None:
                kw["max_connections"] = tcp.max_connections
            if tcp.connect_timeout is not None:
                kw["connect_timeout"] = tcp.connect_timeout.total_seconds()
            if tcp.idle_timeout is not None:
                kw["idle_timeout"] = tcp.idle_timeout.total_seconds()
        if http is not None:
            if http.http1_max_pending_requests is not None:
                kw["max_pending_requests"] = http.http1_max_pending_requests
            if http.http2_max_requests is not None:
                kw["max_requests"] = http.http2_max_requests
            if http.max_retries is not None:
                kw["max_retries"] = http.max_retries
            if http.idle_timeout is not None:
                kw["idle_timeout"] = http.idle_timeout.total_seconds()
            if http.max_requests_per_connection:  # 0 means unlimited in Istio
                kw["max_requests_per_connection"] = http.max_requests_per_connection
        pool = PoolParams(**kw)  # type: ignore[arg-type]
    outlier = None
    od = eff.get("outlier_detection")
    if od is not None:
        okw: dict[str, object] = {
            "consecutive_5xx": getattr(od, "consecutive_5xx_errors", None),
            "consecutive_gateway_failure": getattr(od, "consecutive_gateway_errors", None),
            "min_health_percent": getattr(od, "min_health_percent", None),
        }
        if getattr(od, "interval", None) is not None:
            okw["interval"] = od.interval.total_seconds()  # type: ignore[attr-defined]
        if getattr(od, "base_ejection_time", None) is not None:
            okw["base_ejection_time"] = od.base_ejection_time.total_seconds()  # type: ignore[attr-defined]
        if getattr(od, "max_ejection_percent", None) is not None:
            okw["max_ejection_percent"] = od.max_ejection_percent  # type: ignore[attr-defined]
        outlier = OutlierParams(**okw)  # type: ignore[arg-type]
    health = None
    hc = eff.get("health_check")
    if hc is not None:
        hkw: dict[str, object] = {
            "path": getattr(hc, "path", None),
            "unhealthy_threshold": getattr(hc, "unhealthy_threshold", 3),
            "healthy_threshold": getattr(hc, "healthy_threshold", 2),
        }
        if getattr(hc, "interval", None) is not None:
            hkw["interval"] = hc.interval.total_seconds()  # type: ignore[attr-defined]
        if getattr(hc, "timeout", None) is not None:
            hkw["timeout"] = hc.timeout.total_seconds()  # type: ignore[attr-defined]
        health = HealthCheckParams(**hkw)  # type: ignore[arg-type]
    tls = eff.get("tls")
    tls_disabled = tls is not None and getattr(tls, "mode", None) == "DISABLE"
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
