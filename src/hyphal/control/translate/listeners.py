"""Listener (LDS) builders: the sidecar's outbound, per-upstream and inbound listeners, and
proxyless gRPC api_listeners, from plain parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2

from hyphal.control.translate import naming
from hyphal.control.translate.pb import (
    Message,
    address_pb2,
    ads_source,
    api_listener_pb2,
    base_pb2,
    duration,
    fault_pb2,
    hcm_pb2,
    http_rbac_pb2,
    listener_components_pb2,
    listener_pb2,
    network_rbac_pb2,
    pack,
    route_components_pb2,
    route_pb2,
    router_pb2,
    sds,
    tcp_proxy_pb2,
    tls_pb2,
)


def router_filter() -> Message:
    return hcm_pb2.HttpFilter(name=naming.ROUTER_FILTER, typed_config=pack(router_pb2.Router()))


def fault_filter() -> Message:
    """The fault filter with no listener-level fault: routes carry theirs per route."""
    return hcm_pb2.HttpFilter(name=naming.FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault()))


def http_rbac_filter(rbac: Message) -> Message:
    """An `envoy.filters.http.rbac` filter around an `envoy.config.rbac.v3.RBAC`."""
    return hcm_pb2.HttpFilter(
        name=naming.HTTP_RBAC_FILTER, typed_config=pack(http_rbac_pb2.RBAC(rules=rbac))
    )


def network_rbac_filter(rbac: Message, stat_prefix: str) -> Message:
    return listener_components_pb2.Filter(
        name=naming.NETWORK_RBAC_FILTER,
        typed_config=pack(network_rbac_pb2.RBAC(rules=rbac, stat_prefix=stat_prefix)),
    )


def http_connection_manager(
    stat_prefix: str,
    http_filters: Sequence[Message],
    *,
    rds_name: str | None = None,
    route_config: Message | None = None,
) -> Message:
    """An HCM with either `rds` over ADS or an inline route_config; router must come last."""
    if (rds_name is None) == (route_config is None):
        raise ValueError("an HTTP connection manager needs exactly one of rds_name, route_config")
    if not http_filters or http_filters[-1].name != naming.ROUTER_FILTER:
        raise ValueError(f"{stat_prefix}: the router filter must be the last HTTP filter")
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        http_filters=list(http_filters),
    )
    if rds_name is not None:
        hcm.rds.route_config_name = rds_name
        hcm.rds.config_source.CopyFrom(ads_source())
    else:
        hcm.route_config.CopyFrom(route_config)
    return hcm


def _hcm_filter(hcm: Message) -> Message:
    return listener_components_pb2.Filter(name=naming.HCM_FILTER, typed_config=pack(hcm))


def _tcp_proxy(stat_prefix: str, cluster: str) -> Message:
    return listener_components_pb2.Filter(
        name=naming.TCP_PROXY_FILTER,
        typed_config=pack(tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster)),
    )


def _address(ip: str, port: int) -> Message:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
    )


def _http_filters(fault: bool) -> list[Message]:
    return ([fault_filter()] if fault else []) + [router_filter()]


def outbound_http_listener(port: int, *, fault: bool, ip: str = "127.0.0.1") -> Message:
    """`outbound_http`: one HCM over RDS `outbound_http` for every HTTP service."""
    hcm = http_connection_manager(
        naming.OUTBOUND_HTTP, _http_filters(fault), rds_name=naming.OUTBOUND_HTTP
    )
    return listener_pb2.Listener(
        name=naming.OUTBOUND_HTTP,
        address=_address(ip, port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[_hcm_filter(hcm)])],
    )


def upstream_port_listener(
    name: str, port: int, *, http: bool, cluster: str, fault: bool = False, ip: str = "127.0.0.1"
) -> Message:
    """`outbound|<port>||<fqdn>`: HTTP over RDS of the same name, or TCP straight to `cluster`."""
    f = (
        _hcm_filter(http_connection_manager(name, _http_filters(fault), rds_name=name))
        if http
        else _tcp_proxy(name, cluster)
    )
    return listener_pb2.Listener(
        name=name,
        address=_address(ip, port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[f])],
    )


def downstream_tls() -> Message:
    """mTLS for an inbound listener: client certificate required, `default` + `ROOTCA` via SDS."""
    ctx = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_sds_secret_configs=[sds(naming.DEFAULT_CERT)],
            validation_context_sds_secret_config=sds(naming.ROOTCA),
        ),
    )
    ctx.require_client_certificate.value = True
    return base_pb2.TransportSocket(name=naming.TLS_TRANSPORT, typed_config=pack(ctx))


def inbound_route_config(name: str, cluster: str) -> Message:
    """Everything to the local app; no timeout (the caller's sidecar owns timeouts)."""
    action = route_components_pb2.RouteAction(cluster=cluster, timeout=duration(0))
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=name,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"), route=action
                    )
                ],
            )
        ],
    )


TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


def _tls_inspector() -> Message:
    return listener_components_pb2.ListenerFilter(
        name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
    )


def inbound_listener(
    port: int,
    inbound_port: int,
    *,
    http: bool,
    tls: bool,
    deny: Message | None = None,
    allow: Message | None = None,
    ip: str = "127.0.0.1",
    permissive: bool = False,
    request_filters: Sequence[Message] = (),
) -> Message:
    """`inbound|<port>`: (m)TLS termination, request filters (jwt_authn, local_ratelimit),
    rbac DENY then ALLOW, then the local app. `permissive` (PeerAuthentication PERMISSIVE, with
    `tls`): tls_inspector and two filter chains, mTLS (`transport_protocol: tls`) and
    plaintext (`raw_buffer`), with the same filters."""
    name = naming.inbound_listener(port)
    cluster = naming.inbound_cluster(port)
    filters: list[Message] = []
    if http:
        http_filters = list(request_filters)
        http_filters += [http_rbac_filter(r) for r in (deny, allow) if r is not None]
        http_filters.append(router_filter())
        hcm = http_connection_manager(
            name, http_filters, route_config=inbound_route_config(name, cluster)
        )
        filters.append(_hcm_filter(hcm))
    else:
        filters += [network_rbac_filter(r, name) for r in (deny, allow) if r is not None]
        filters.append(_tcp_proxy(name, cluster))
    chain = listener_components_pb2.FilterChain(filters=filters)
    if tls:
        chain.transport_socket.CopyFrom(downstream_tls())
    if not (tls and permissive):
        return listener_pb2.Listener(
            name=name, address=_address(ip, inbound_port), filter_chains=[chain]
        )
    chain.filter_chain_match.transport_protocol = "tls"
    plain = listener_components_pb2.FilterChain(filters=filters)
    plain.filter_chain_match.transport_protocol = "raw_buffer"
    return listener_pb2.Listener(
        name=name,
        address=_address(ip, inbound_port),
        listener_filters=[_tls_inspector()],
        filter_chains=[chain, plain],
    )


def proxyless_api_listener(name: str, rds_name: str, *, fault: bool) -> Message:
    """A gRPC client's `<host>:<port>` api_listener (router last, as grpcio requires)."""
    hcm = http_connection_manager(name, _http_filters(fault), rds_name=rds_name)
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=pack(hcm))
    )
