"""Cluster (CDS) builders: one EDS cluster per service port and subset, from plain parameters.

`ClusterParams` holds everything a DestinationRule traffic policy can say, already resolved to
Istio's defaults; `policy.py` makes one from the user's resources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hyphal.control.translate import naming
from hyphal.control.translate.endpoints import lb_endpoint
from hyphal.control.translate.pb import (
    Message,
    base_pb2,
    circuit_breaker_pb2,
    cluster_pb2,
    duration,
    health_check_pb2,
    http_protocol_options_pb2,
    outlier_detection_pb2,
    pack,
    percent_pb2,
    protocol_pb2,
    sds,
    string_pb2,
    struct,
    tls_common_pb2,
    tls_pb2,
    u32,
)
from hyphal.control.translate.pb import ads_source as _ads

MAX_U32 = 2**32 - 1
LB_POLICIES = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV", "PEAK_EWMA")


@dataclass(frozen=True, slots=True)
class PoolParams:
    """connectionPool: circuit-breaker thresholds (Istio defaults: 2^32-1) and HTTP options."""

    max_connections: int = MAX_U32
    max_pending_requests: int = MAX_U32
    max_requests: int = MAX_U32
    max_retries: int = MAX_U32
    connect_timeout: float = 10.0
    idle_timeout: float | None = None
    max_requests_per_connection: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierParams:
    """outlierDetection, with Istio's defaults for interval, ejection time and percent."""

    consecutive_5xx: int | None = None
    consecutive_gateway_failure: int | None = None
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int | None = None


@dataclass(frozen=True, slots=True)
class HealthCheckParams:
    """hyphal's healthCheck extension: HTTP GET `path` when given, else a TCP connect."""

    path: str | None = None
    interval: float = 10.0
    timeout: float = 1.0
    unhealthy_threshold: int = 3
    healthy_threshold: int = 1


@dataclass(frozen=True, slots=True)
class LbParams:
    """loadBalancer: a simple policy, or consistent hashing (RING_HASH / MAGLEV)."""

    policy: str = "ROUND_ROBIN"
    minimum_ring_size: int | None = None
    maglev_table_size: int | None = None


@dataclass(frozen=True, slots=True)
class ClusterParams:
    """One cluster's resolved settings (top-level policy already overridden by the subset's)."""

    lb: LbParams = LbParams()
    pool: PoolParams = PoolParams()
    outlier: OutlierParams | None = None
    health_check: HealthCheckParams | None = None
    tls_disabled: bool = False


def upstream_tls(sni: str, sans: Sequence[str]) -> Message:
    """The `envoy.transport_sockets.tls` socket for a mesh destination (SDS default + ROOTCA)."""
    ctx = tls_pb2.UpstreamTlsContext(
        sni=sni,
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_sds_secret_configs=[sds(naming.DEFAULT_CERT)],
            combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                default_validation_context=tls_common_pb2.CertificateValidationContext(
                    match_typed_subject_alt_names=[
                        tls_common_pb2.SubjectAltNameMatcher(
                            san_type=tls_common_pb2.SubjectAltNameMatcher.URI,
                            matcher=string_pb2.StringMatcher(exact=san),
                        )
                        for san in sorted(set(sans))
                    ]
                ),
                validation_context_sds_secret_config=sds(naming.ROOTCA),
            ),
        ),
    )
    return base_pb2.TransportSocket(name=naming.TLS_TRANSPORT, typed_config=pack(ctx))


def _health_check(hc: HealthCheckParams) -> Message:
    out = health_check_pb2.HealthCheck(
        timeout=duration(hc.timeout),
        interval=duration(hc.interval),
        unhealthy_threshold=u32(hc.unhealthy_threshold),
        healthy_threshold=u32(hc.healthy_threshold),
    )
    if hc.path is not None:
        out.http_health_check.path = hc.path
    else:
        out.tcp_health_check.SetInParent()
    return out


def _outlier(od: OutlierParams) -> Message:
    out = outlier_detection_pb2.OutlierDetection(
        interval=duration(od.interval),
        base_ejection_time=duration(od.base_ejection_time),
        max_ejection_percent=u32(od.max_ejection_percent),
    )
    # Unset: Envoy's defaults (5 consecutive 5xx, enforced), as Istio leaves them; 0 = off.
    if od.consecutive_5xx is not None:
        out.consecutive_5xx.value = od.consecutive_5xx
        out.enforcing_consecutive_5xx.value = 100 if od.consecutive_5xx > 0 else 0
    if od.consecutive_gateway_failure is not None:
        out.consecutive_gateway_failure.value = od.consecutive_gateway_failure
        out.enforcing_consecutive_gateway_failure.value = 100
    return out


def build_cluster(
    name: str,
    params: ClusterParams = ClusterParams(),
    *,
    tls_sans: Sequence[str] | None = None,
    proxyless: bool = False,
    http2: bool = False,
) -> Message:
    """An EDS cluster over ADS. `tls_sans` not None -> mTLS to a mesh destination with those SANs.
    `http2` (GRPC/HTTP2 ports, sidecars only): HTTP/2 to the endpoints (`http2_options`).

    Proxyless gRPC clients accept only ROUND_ROBIN and RING_HASH: MAGLEV falls back to
    RING_HASH, the rest to ROUND_ROBIN.
    """
    policy = params.lb.policy
    if policy not in LB_POLICIES:
        raise ValueError(f"cluster {name}: unknown load balancer {policy!r} (one of {LB_POLICIES})")
    if proxyless and policy == "MAGLEV":
        policy = "RING_HASH"
    elif proxyless and policy != "RING_HASH":
        policy = "ROUND_ROBIN"  # grpcio NACKs every other lb_policy enum value
    hyphal_md: dict[str, object] = {}
    if policy == "PEAK_EWMA":
        hyphal_md["lb"] = "PEAK_EWMA"
        policy = "LEAST_REQUEST"
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration(params.pool.connect_timeout),
        lb_policy=getattr(cluster_pb2.Cluster, policy),
    )
    c.eds_cluster_config.eds_config.CopyFrom(_ads())
    if policy == "RING_HASH" and params.lb.minimum_ring_size is not None:
        c.ring_hash_lb_config.minimum_ring_size.value = params.lb.minimum_ring_size
    if policy == "MAGLEV" and params.lb.maglev_table_size is not None:
        c.maglev_lb_config.table_size.value = params.lb.maglev_table_size
    pool = params.pool
    c.circuit_breakers.thresholds.append(
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            priority=base_pb2.DEFAULT,
            max_connections=u32(pool.max_connections),
            max_pending_requests=u32(pool.max_pending_requests),
            max_requests=u32(pool.max_requests),
            max_retries=u32(pool.max_retries),
        )
    )
    if pool.idle_timeout is not None or pool.max_requests_per_connection is not None:
        opts = protocol_pb2.HttpProtocolOptions()
        if pool.idle_timeout is not None:
            opts.idle_timeout.CopyFrom(duration(pool.idle_timeout))
        if pool.max_requests_per_connection is not None:
            opts.max_requests_per_connection.value = pool.max_requests_per_connection
        c.common_http_protocol_options.CopyFrom(opts)
    if params.outlier is not None:
        c.outlier_detection.CopyFrom(_outlier(params.outlier))
        if params.outlier.min_health_percent is not None:
            mhp = params.outlier.min_health_percent
            c.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=mhp))
            hyphal_md["min_health_percent"] = mhp
    if params.health_check is not None:
        c.health_checks.append(_health_check(params.health_check))
    if tls_sans is not None and not params.tls_disabled and not proxyless:
        c.transport_socket.CopyFrom(upstream_tls(name, tls_sans))
    if http2 and not proxyless:
        http2_options(c)
    if hyphal_md:
        c.metadata.filter_metadata[naming.HYPHAL_METADATA].CopyFrom(struct(hyphal_md))
    return c


HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def http2_options(c: Message) -> None:
    """Envoy's modern form: `typed_extension_protocol_options[HttpProtocolOptions]` with
    `explicit_http_config.http2_protocol_options` (the Cluster field of that name is
    deprecated)."""
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    opts.explicit_http_config.http2_protocol_options.SetInParent()
    c.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(pack(opts))


def build_static_cluster(
    name: str, address: str, port: int, connect_timeout: float = 10.0, service: str = "",
    http2: bool = False,
) -> Message:
    """A STATIC cluster (the sidecar's own app, `inbound|<port>||`). `service` is the FQDN of
    the Service the port serves, carried in `filter_metadata["hyphal"]["service"]` so the
    destination side reports it as `destination_service` (as Istio does)."""
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(connect_timeout),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    c.load_assignment.cluster_name = name
    c.load_assignment.endpoints.add().lb_endpoints.append(lb_endpoint(address, port))
    if service:
        c.metadata.filter_metadata[naming.HYPHAL_METADATA].CopyFrom(struct({"service": service}))
    if http2:
        http2_options(c)
    return c
