"""Compile Cluster and ClusterLoadAssignment resources into ClusterSpec and EndpointSpecs."""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2, protocol_pb2
from envoy.config.core.v3 import health_check_pb2 as hc
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import struct_pb2

from hyphal.proxy.compile.common import Where, join, seconds
from hyphal.proxy.compile.types import CLUSTER, DEFAULT_SECRET, ENDPOINT, ROOTCA
from hyphal.proxy.runtime.tables import (
    CircuitBreaker,
    ClusterSpec,
    EndpointSpec,
    H2Keepalive,
    HealthCheckSpec,
    LbPolicy,
    OutlierSpec,
    UpstreamTls,
)

TLS_SOCKET = "envoy.transport_sockets.tls"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_LB = {
    cluster_pb2.Cluster.ROUND_ROBIN: LbPolicy.ROUND_ROBIN,
    cluster_pb2.Cluster.LEAST_REQUEST: LbPolicy.LEAST_REQUEST,
    cluster_pb2.Cluster.RANDOM: LbPolicy.RANDOM,
    cluster_pb2.Cluster.RING_HASH: LbPolicy.RING_HASH,
    cluster_pb2.Cluster.MAGLEV: LbPolicy.MAGLEV,
}


@dataclass(frozen=True, slots=True)
class CompiledCluster:
    """A Cluster before its endpoints are known: `eds_name` is what to ask EDS for
    (None for a STATIC cluster, whose endpoints are already in `spec`)."""

    spec: ClusterSpec
    eds_name: str | None


def compile_cluster(c: cluster_pb2.Cluster) -> CompiledCluster:
    """A Cluster resource (CDS); raises CompileError naming the field."""
    w = Where(CLUSTER, c.name)
    w.only(
        c,
        {
            "name",
            "alt_stat_name",
            "type",
            "eds_cluster_config",
            "connect_timeout",
            "lb_policy",
            "load_assignment",
            "health_checks",
            "max_requests_per_connection",
            "circuit_breakers",
            "common_http_protocol_options",
            "outlier_detection",
            "transport_socket",
            "metadata",
            "common_lb_config",
            "ring_hash_lb_config",
            "maglev_lb_config",
            "typed_extension_protocol_options",
        },
        "",
    )
    if not c.name:
        raise w.error("name", "a cluster needs a name")
    eds_name: str | None
    endpoints: tuple[EndpointSpec, ...] = ()
    if c.type == cluster_pb2.Cluster.EDS:
        w.only(c.eds_cluster_config, {"eds_config", "service_name"}, "eds_cluster_config")
        src = c.eds_cluster_config.eds_config
        if src.WhichOneof("config_source_specifier") not in ("ads", None):
            raise w.error(
                "eds_cluster_config.eds_config",
                "only `ads {}` is supported (endpoints come over the same stream)",
            )
        eds_name = c.eds_cluster_config.service_name or c.name
    elif c.type == cluster_pb2.Cluster.STATIC:
        eds_name = None
        endpoints = compile_endpoints(c.load_assignment, Where(CLUSTER, c.name), "load_assignment")
    else:
        kind = cluster_pb2.Cluster.DiscoveryType.Name(c.type)
        raise w.error("type", f"{kind} is not supported (use EDS or STATIC)")
    if c.lb_policy not in _LB:
        raise w.error(
            "lb_policy", f"{cluster_pb2.Cluster.LbPolicy.Name(c.lb_policy)} is not supported"
        )
    max_req: int | None = c.max_requests_per_connection.value or None
    idle: float | None = 3600.0
    if c.HasField("common_http_protocol_options"):
        o = c.common_http_protocol_options
        w.only(o, {"idle_timeout", "max_requests_per_connection"}, "common_http_protocol_options")
        if o.HasField("idle_timeout"):
            idle = seconds(o.idle_timeout) or None
        if o.HasField("max_requests_per_connection"):
            max_req = o.max_requests_per_connection.value or None
    http2, (max_streams, keepalive), proto_idle = _http2(c, w)
    if proto_idle is not None:
        idle = proto_idle or None
    labels = hyphal_metadata(c.metadata, w, "metadata")
    lb = _LB[c.lb_policy]
    if labels.get("lb") == "PEAK_EWMA":
        if lb is not LbPolicy.LEAST_REQUEST:
            raise w.error("metadata.filter_metadata.hyphal.lb",
                          "PEAK_EWMA marks a LEAST_REQUEST cluster only")
        lb = LbPolicy.PEAK_EWMA
    spec = ClusterSpec(
        name=c.name,
        endpoints=endpoints,
        lb=lb,
        tls=upstream_tls(c, w),
        connect_timeout_s=seconds(c.connect_timeout) if c.HasField("connect_timeout") else 5.0,
        circuit_breaker=circuit_breaker(c, w),
        outlier=outlier(c, w),
        idle_timeout_s=idle,
        max_requests_per_connection=max_req,
        health_check=health_check(c, w),
        lb_metadata={k: v for k, v in labels.items() if isinstance(v, str)},
        ring_min_size=_ring_size(c, w),
        maglev_table_size=_maglev_size(c, w),
        service=_service(c.name, labels),
        http2=http2,
        max_concurrent_streams=max_streams,
        h2_keepalive=keepalive,
    )
    return CompiledCluster(spec, eds_name)


def _http2_options(o: protocol_pb2.Http2ProtocolOptions, w: Where,
                   path: str) -> tuple[int, H2Keepalive | None]:
    """Accepted Http2ProtocolOptions fields: (max_concurrent_streams (default 100),
    connection_keepalive)."""
    w.only(o, {"max_concurrent_streams", "initial_stream_window_size",
               "initial_connection_window_size", "connection_keepalive"}, path)
    streams = 100
    if o.HasField("max_concurrent_streams"):
        streams = o.max_concurrent_streams.value
        if streams < 1:
            raise w.error(join(path, "max_concurrent_streams"), "must be >= 1")
    keepalive: H2Keepalive | None = None
    if o.HasField("connection_keepalive"):
        k = o.connection_keepalive
        kpath = join(path, "connection_keepalive")
        w.only(k, {"interval", "timeout", "interval_jitter"}, kpath)
        timeout = seconds(k.timeout)
        if timeout < 0.001:
            raise w.error(join(kpath, "timeout"), "must be at least 1ms")
        interval = seconds(k.interval) if k.HasField("interval") else 0.0
        jitter = k.interval_jitter.value / 100 if k.HasField("interval_jitter") else 0.15
        if interval > 0:  # Envoy: no interval, no periodic PINGs
            keepalive = H2Keepalive(interval, timeout, jitter)
    return int(streams), keepalive


def _http2(c: cluster_pb2.Cluster,
           w: Where) -> tuple[bool, tuple[int, H2Keepalive | None], float | None]:
    """(http2, (max concurrent streams, keepalive), idle timeout or None) from
    `typed_extension_protocol_options[HTTP_OPTIONS]` (explicit_http_config); the deprecated
    Cluster.http2_protocol_options is refused by `w.only` above, naming the field."""
    opts = c.typed_extension_protocol_options
    for key in opts:
        if key != HTTP_OPTIONS:
            raise w.error(f"typed_extension_protocol_options[{key}]",
                          f"not supported (only {HTTP_OPTIONS})")
    if HTTP_OPTIONS not in opts:
        return False, (100, None), None
    path = f"typed_extension_protocol_options[{HTTP_OPTIONS}]"
    hpo = w.unpack(opts[HTTP_OPTIONS], http_protocol_options_pb2.HttpProtocolOptions, path)
    w.only(hpo, {"explicit_http_config", "common_http_protocol_options"}, path)
    idle: float | None = None
    if hpo.HasField("common_http_protocol_options"):
        cpath = join(path, "common_http_protocol_options")
        w.only(hpo.common_http_protocol_options, {"idle_timeout"}, cpath)
        if hpo.common_http_protocol_options.HasField("idle_timeout"):
            idle = seconds(hpo.common_http_protocol_options.idle_timeout)
    if not hpo.HasField("explicit_http_config"):
        raise w.error(join(path, "explicit_http_config"),
                      "needed (auto/use_downstream protocol selection is not supported)")
    ehc = hpo.explicit_http_config
    epath = join(path, "explicit_http_config")
    kind = ehc.WhichOneof("protocol_config")
    if kind == "http2_protocol_options":
        return True, _http2_options(ehc.http2_protocol_options, w,
                                    join(epath, "http2_protocol_options")), idle
    if kind == "http_protocol_options":
        w.only(ehc.http_protocol_options, set(), join(epath, "http_protocol_options"))
        return False, (100, None), idle
    raise w.error(epath, f"{kind or 'no protocol'} is not supported (HTTP/1.1 or HTTP/2)")


def _ring_size(c: cluster_pb2.Cluster, w: Where) -> int:
    if not c.HasField("ring_hash_lb_config"):
        return 1024
    w.only(c.ring_hash_lb_config, {"minimum_ring_size"}, "ring_hash_lb_config")
    size = c.ring_hash_lb_config.minimum_ring_size.value or 1024
    if size > 8 * 1024 * 1024:
        raise w.error("ring_hash_lb_config.minimum_ring_size", "must be at most 8388608")
    return size


def _maglev_size(c: cluster_pb2.Cluster, w: Where) -> int:
    if not c.HasField("maglev_lb_config"):
        return 65537
    w.only(c.maglev_lb_config, {"table_size"}, "maglev_lb_config")
    size = c.maglev_lb_config.table_size.value or 65537
    if size < 2 or size > 5_000_011 or any(size % p == 0 for p in range(2, int(size**0.5) + 1)):
        raise w.error("maglev_lb_config.table_size",
                      f"{size} is not a prime up to 5000011 (try 65537)")
    return size


def _service(name: str, md: dict[str, object]) -> str:
    svc = md.get("service")
    if isinstance(svc, str):
        return svc
    parts = name.split("|")
    if len(parts) == 4 and parts[0] == "outbound":
        return parts[3]
    return ""


def hyphal_metadata(md: base_pb2.Metadata, w: Where, path: str) -> dict[str, object]:
    """`filter_metadata["hyphal"]` as plain values (other namespaces are diagnostics only)."""
    s = md.filter_metadata.get("hyphal")
    if s is None:
        return {}
    return _plain(s)


def _plain(s: struct_pb2.Struct) -> dict[str, object]:
    from google.protobuf.json_format import MessageToDict

    out: dict[str, object] = MessageToDict(s)
    return out


def circuit_breaker(c: cluster_pb2.Cluster, w: Where) -> CircuitBreaker:
    if not c.HasField("circuit_breakers"):
        return CircuitBreaker()
    w.only(c.circuit_breakers, {"thresholds"}, "circuit_breakers")
    ths = c.circuit_breakers.thresholds
    if len(ths) > 1:
        raise w.error("circuit_breakers.thresholds", "only one (DEFAULT priority) is supported")
    if not ths:
        return CircuitBreaker()
    t = ths[0]
    path = "circuit_breakers.thresholds[0]"
    w.only(
        t,
        {
            "priority",
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_retries",
            "track_remaining",
        },
        path,
    )
    if t.priority != base_pb2.DEFAULT:
        raise w.error(join(path, "priority"), "only DEFAULT priority is supported")
    d = CircuitBreaker()
    return CircuitBreaker(
        max_connections=t.max_connections.value
        if t.HasField("max_connections")
        else d.max_connections,
        max_pending_requests=t.max_pending_requests.value
        if t.HasField("max_pending_requests")
        else d.max_pending_requests,
        max_requests=t.max_requests.value if t.HasField("max_requests") else d.max_requests,
        max_retries=t.max_retries.value if t.HasField("max_retries") else d.max_retries,
    )


def _panic_threshold(c: cluster_pb2.Cluster, w: Where) -> float:
    """`common_lb_config.healthy_panic_threshold` (Istio's minHealthPercent); Envoy's 50%."""
    if not c.HasField("common_lb_config"):
        return OutlierSpec().healthy_panic_threshold
    w.only(c.common_lb_config, {"healthy_panic_threshold"}, "common_lb_config")
    if not c.common_lb_config.HasField("healthy_panic_threshold"):
        return OutlierSpec().healthy_panic_threshold
    value = c.common_lb_config.healthy_panic_threshold.value
    if not 0.0 <= value <= 100.0:
        raise w.error("common_lb_config.healthy_panic_threshold", "must be in [0, 100]")
    return float(value)


def outlier(c: cluster_pb2.Cluster, w: Where) -> OutlierSpec | None:
    if not c.HasField("outlier_detection"):
        return None
    o = c.outlier_detection
    path = "outlier_detection"
    w.only(
        o,
        {
            "consecutive_5xx",
            "consecutive_gateway_failure",
            "interval",
            "base_ejection_time",
            "max_ejection_percent",
            "enforcing_consecutive_5xx",
            "enforcing_consecutive_gateway_failure",
            "enforcing_success_rate",
            "split_external_local_origin_errors",
            "max_ejection_time",
        },
        path,
    )
    if o.split_external_local_origin_errors:
        raise w.error(join(path, "split_external_local_origin_errors"), "not supported")
    if o.HasField("enforcing_success_rate") and o.enforcing_success_rate.value != 0:
        raise w.error(
            join(path, "enforcing_success_rate"),
            "success-rate ejection is not supported (set 0 or leave unset)",
        )
    d = OutlierSpec()
    c5 = o.consecutive_5xx.value if o.HasField("consecutive_5xx") else d.consecutive_5xx
    gw = (
        o.consecutive_gateway_failure.value
        if o.HasField("consecutive_gateway_failure")
        else d.consecutive_gateway_failure
    )
    # Enforcement is all or nothing here: 0% turns the detector off (0 = never eject).
    if o.HasField("enforcing_consecutive_5xx"):
        c5 = c5 if o.enforcing_consecutive_5xx.value > 0 else 0
    # Envoy's default enforcement of gateway failures is 0%.
    gw_on = o.HasField("enforcing_consecutive_gateway_failure") and (
        o.enforcing_consecutive_gateway_failure.value > 0
    )
    return OutlierSpec(
        consecutive_5xx=c5,
        consecutive_gateway_failure=gw if gw_on else 0,
        interval_s=seconds(o.interval) if o.HasField("interval") else d.interval_s,
        base_ejection_time_s=seconds(o.base_ejection_time)
        if o.HasField("base_ejection_time")
        else d.base_ejection_time_s,
        max_ejection_percent=o.max_ejection_percent.value
        if o.HasField("max_ejection_percent")
        else d.max_ejection_percent,
        max_ejection_time_s=max(
            seconds(o.max_ejection_time) if o.HasField("max_ejection_time")
            else d.max_ejection_time_s,
            seconds(o.base_ejection_time) if o.HasField("base_ejection_time")
            else d.base_ejection_time_s),
        healthy_panic_threshold=_panic_threshold(c, w),
    )


def health_check(c: cluster_pb2.Cluster, w: Where) -> HealthCheckSpec | None:
    if not c.health_checks:
        return None
    if len(c.health_checks) > 1:
        raise w.error("health_checks", "only one health check is supported")
    h: health_check_pb2.HealthCheck = c.health_checks[0]
    path = "health_checks[0]"
    w.only(
        h,
        {"timeout", "interval", "unhealthy_threshold", "healthy_threshold", "http_health_check",
         "tcp_health_check"},
        path,
    )
    tcp = h.HasField("tcp_health_check")
    if tcp:
        w.only(h.tcp_health_check, set(), join(path, "tcp_health_check"))
    elif not h.HasField("http_health_check"):
        raise w.error(path, "needs http_health_check or tcp_health_check")
    hh: hc.HealthCheck.HttpHealthCheck = h.http_health_check
    w.only(hh, {"path", "host"}, join(path, "http_health_check"))
    d = HealthCheckSpec()
    return HealthCheckSpec(
        tcp=tcp,
        path=hh.path or "/",
        interval_s=seconds(h.interval) if h.HasField("interval") else d.interval_s,
        timeout_s=seconds(h.timeout) if h.HasField("timeout") else d.timeout_s,
        unhealthy_threshold=h.unhealthy_threshold.value
        if h.HasField("unhealthy_threshold")
        else d.unhealthy_threshold,
        healthy_threshold=h.healthy_threshold.value
        if h.HasField("healthy_threshold")
        else d.healthy_threshold,
    )


def check_sds(
    ctx: tls_pb2.CommonTlsContext, w: Where, path: str
) -> common_pb2.CertificateValidationContext | None:
    """Our certificate must be SDS `default`, the roots SDS `ROOTCA`; returns the inline
    validation context that may carry SAN matchers (or None)."""
    w.only(
        ctx,
        {
            "tls_certificate_sds_secret_configs",
            "validation_context_sds_secret_config",
            "combined_validation_context",
            "alpn_protocols",
            "tls_params",
        },
        path,
    )
    for alpn in ctx.alpn_protocols:
        if alpn not in ("http/1.1", "h2"):
            raise w.error(
                join(path, "alpn_protocols"), f"{alpn!r} is not supported (h2 or http/1.1)"
            )
    certs = [s.name for s in ctx.tls_certificate_sds_secret_configs]
    if certs != [DEFAULT_SECRET]:
        raise w.error(
            join(path, "tls_certificate_sds_secret_configs"),
            f"must be exactly [{DEFAULT_SECRET!r}] (the sidecar's own certificate), got {certs}",
        )
    vc_name = ""
    inline = None
    if ctx.HasField("combined_validation_context"):
        cvc = ctx.combined_validation_context
        w.only(
            cvc,
            {"default_validation_context", "validation_context_sds_secret_config"},
            join(path, "combined_validation_context"),
        )
        vc_name = cvc.validation_context_sds_secret_config.name
        inline = cvc.default_validation_context
        w.only(
            inline,
            {"match_typed_subject_alt_names"},
            join(path, "combined_validation_context.default_validation_context"),
        )
    elif ctx.HasField("validation_context_sds_secret_config"):
        vc_name = ctx.validation_context_sds_secret_config.name
    if vc_name != ROOTCA:
        raise w.error(
            join(path, "validation_context_sds_secret_config"),
            f"must name the {ROOTCA!r} secret, got {vc_name!r}",
        )
    return inline


def upstream_tls(c: cluster_pb2.Cluster, w: Where) -> UpstreamTls | None:
    if not c.HasField("transport_socket"):
        return None
    ts = c.transport_socket
    w.only(ts, {"name", "typed_config"}, "transport_socket")
    if ts.name != TLS_SOCKET:
        raise w.error("transport_socket.name", f"{ts.name!r} is not supported (use {TLS_SOCKET})")
    u = w.unpack(ts.typed_config, tls_pb2.UpstreamTlsContext, "transport_socket.typed_config")
    path = "transport_socket.typed_config"
    w.only(u, {"common_tls_context", "sni"}, path)
    inline = check_sds(u.common_tls_context, w, join(path, "common_tls_context"))
    sans: set[str] = set()
    if inline is not None:
        for i, m in enumerate(inline.match_typed_subject_alt_names):
            mp = join(
                path,
                f"common_tls_context.combined_validation_context."
                f"default_validation_context.match_typed_subject_alt_names[{i}]",
            )
            if m.san_type != common_pb2.SubjectAltNameMatcher.URI:
                raise w.error(join(mp, "san_type"), "only URI SANs are supported")
            if m.matcher.WhichOneof("match_pattern") != "exact" or m.matcher.ignore_case:
                raise w.error(join(mp, "matcher"), "only an exact match is supported")
            sans.add(m.matcher.exact)
    return UpstreamTls(sni=u.sni or c.name, expected_sans=frozenset(sans))


_HEALTHY = {health_check_pb2.UNKNOWN, health_check_pb2.HEALTHY, health_check_pb2.DEGRADED}


def compile_load_assignment(cla: endpoint_pb2.ClusterLoadAssignment) -> tuple[EndpointSpec, ...]:
    """A ClusterLoadAssignment resource (EDS)."""
    return compile_endpoints(cla, Where(ENDPOINT, cla.cluster_name), "")


def compile_endpoints(
    cla: endpoint_pb2.ClusterLoadAssignment, w: Where, path: str
) -> tuple[EndpointSpec, ...]:
    w.only(cla, {"cluster_name", "endpoints", "policy"}, path)
    if cla.HasField("policy"):
        w.only(cla.policy, {"overprovisioning_factor"}, join(path, "policy"))
    out: list[EndpointSpec] = []
    for i, group in enumerate(cla.endpoints):
        gpath = join(path, f"endpoints[{i}]")
        w.only(group, {"locality", "lb_endpoints", "load_balancing_weight", "priority"}, gpath)
        if group.priority != 0:
            raise w.error(join(gpath, "priority"), "only priority 0 is supported")
        for j, lbe in enumerate(group.lb_endpoints):
            out.append(_endpoint(lbe, w, join(gpath, f"lb_endpoints[{j}]")))
    return tuple(out)


def _endpoint(lbe: endpoint_components_pb2.LbEndpoint, w: Where, path: str) -> EndpointSpec:
    w.only(lbe, {"endpoint", "health_status", "metadata", "load_balancing_weight"}, path)
    w.only(lbe.endpoint, {"address", "hostname", "health_check_config"}, join(path, "endpoint"))
    sa = lbe.endpoint.address.socket_address
    apath = join(path, "endpoint.address.socket_address")
    if not sa.address:
        raise w.error(apath, "an endpoint needs a socket address")
    if sa.WhichOneof("port_specifier") != "port_value" or not 0 < sa.port_value < 65536:
        raise w.error(join(apath, "port_value"), "needs a port in 1..65535")
    weight = lbe.load_balancing_weight.value if lbe.HasField("load_balancing_weight") else 1
    if weight < 1:
        raise w.error(join(path, "load_balancing_weight"), "must be >= 1")
    md = hyphal_metadata(lbe.metadata, w, join(path, "metadata"))
    raw_labels = md.get("labels", {})
    labels = {str(k): str(v) for k, v in raw_labels.items()} if isinstance(raw_labels, dict) else {}
    ident = md.get("identity")
    return EndpointSpec(
        host=sa.address,
        port=sa.port_value,
        weight=weight,
        labels=labels,
        identity=ident if isinstance(ident, str) else None,
        healthy=lbe.health_status in _HEALTHY,
    )
