"""Compile a Listener (HCM with rds or inline routes, rbac/fault/router; or tcp_proxy) into a
ListenerSpec."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from hyphal.proxy.compile import capture as capture_compile
from hyphal.proxy.compile import rbac as rbac_compile
from hyphal.proxy.compile.clusters import TLS_SOCKET, check_sds
from hyphal.proxy.compile.common import Where, join
from hyphal.proxy.compile.routes import route_table
from hyphal.proxy.compile.types import LISTENER
from hyphal.proxy.runtime.tables import DownstreamTls, ListenerKind, ListenerSpec, RouteTable

# Inbound request filters, compiled by hyphal.proxy.compile.filters (their names live here so
# that module is imported only when a listener has one).
JWT_AUTHN = "envoy.filters.http.jwt_authn"
LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
REQUEST_FILTERS = (JWT_AUTHN, LOCAL_RATELIMIT)

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
NET_RBAC = "envoy.filters.network.rbac"
HTTP_RBAC = "envoy.filters.http.rbac"
HTTP_FAULT = "envoy.filters.http.fault"
ROUTER = "envoy.filters.http.router"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


def _permissive(lst: listener_pb2.Listener, w: Where) -> bool:
    """Whether `lst` is PERMISSIVE's shape: tls_inspector, then a `tls` chain with the
    transport socket and a `raw_buffer` chain with the same filters and none."""
    if not lst.listener_filters:
        if len(lst.filter_chains) != 1:
            raise w.error("filter_chains", "exactly one filter chain is supported (or two, "
                          "tls and raw_buffer, behind a tls_inspector), got "
                          f"{len(lst.filter_chains)}")
        if lst.filter_chains[0].HasField("filter_chain_match"):
            raise w.error("filter_chains[0].filter_chain_match",
                          "filter chain matching needs the tls_inspector listener filter")
        return False
    names = [f.name for f in lst.listener_filters]
    if names != [TLS_INSPECTOR]:
        raise w.error("listener_filters", f"{names}: only [{TLS_INSPECTOR}] is supported")
    protocols = [c.filter_chain_match.transport_protocol for c in lst.filter_chains]
    if protocols != ["tls", "raw_buffer"]:
        raise w.error("filter_chains", "with tls_inspector, two filter chains are expected: "
                      f"transport_protocol tls then raw_buffer (got {protocols})")
    tls_chain, plain = lst.filter_chains
    for i, c in enumerate(lst.filter_chains):
        w.only(c.filter_chain_match, {"transport_protocol"},
               f"filter_chains[{i}].filter_chain_match")
    if not tls_chain.HasField("transport_socket") or plain.HasField("transport_socket"):
        raise w.error("filter_chains", "the tls chain needs the TLS transport socket and the "
                      "raw_buffer chain none")
    same = [f.SerializeToString(deterministic=True) for f in tls_chain.filters] == [
        f.SerializeToString(deterministic=True) for f in plain.filters]
    if not same:
        raise w.error("filter_chains[1].filters", "the hyphal sidecar needs the same filters "
                      "on the tls and raw_buffer chains (policy applies to both)")
    return True


def compile_listener(lst: listener_pb2.Listener) -> ListenerSpec:
    """A Listener resource (LDS); raises CompileError naming the field."""
    w = Where(LISTENER, lst.name)
    if lst.HasField("api_listener"):
        raise w.error("api_listener", "api listeners are for proxyless gRPC clients, not sidecars")
    w.only(
        lst,
        {"name", "address", "filter_chains", "stat_prefix", "traffic_direction", "metadata",
         "listener_filters", *capture_compile.FIELDS},
        "",
    )
    sa = lst.address.socket_address
    w.only(lst.address, {"socket_address"}, "address")
    w.only(sa, {"address", "port_value", "protocol"}, "address.socket_address")
    if not sa.address or not 0 < sa.port_value < 65536:
        raise w.error("address.socket_address", "needs an address and a port in 1..65535")
    permissive = _permissive(lst, w)
    chain = lst.filter_chains[0]
    cpath = "filter_chains[0]"
    w.only(chain, {"filters", "transport_socket", "name", "filter_chain_match"}, cpath)
    tls = downstream_tls(chain, w, cpath)
    if permissive and tls is not None:
        tls = DownstreamTls(require_client_cert=tls.require_client_cert, permissive=True)
    inbound = lst.name.startswith("inbound|") or lst.traffic_direction == base_pb2.INBOUND
    if not chain.filters:
        raise w.error(join(cpath, "filters"), "a filter chain needs filters")
    last = chain.filters[-1]
    if last.name == HCM:
        if len(chain.filters) != 1:
            raise w.error(
                join(cpath, "filters"),
                "an HTTP filter chain holds only the http_connection_manager",
            )
        return capture_compile.apply(lst, w, _http_listener(lst, chain, w, cpath, tls, inbound))
    if last.name == TCP_PROXY:
        return capture_compile.apply(lst, w, _tcp_listener(lst, chain, w, cpath, tls, inbound))
    raise w.error(
        join(cpath, f"filters[{len(chain.filters) - 1}].name"),
        f"{last.name!r}: the last network filter must be {HCM} or {TCP_PROXY}",
    )


def downstream_tls(
    chain: listener_components_pb2.FilterChain, w: Where, path: str
) -> DownstreamTls | None:
    if not chain.HasField("transport_socket"):
        return None
    ts = chain.transport_socket
    tpath = join(path, "transport_socket")
    w.only(ts, {"name", "typed_config"}, tpath)
    if ts.name != TLS_SOCKET:
        raise w.error(join(tpath, "name"), f"{ts.name!r} is not supported (use {TLS_SOCKET})")
    d = w.unpack(ts.typed_config, tls_pb2.DownstreamTlsContext, join(tpath, "typed_config"))
    dpath = join(tpath, "typed_config")
    w.only(d, {"common_tls_context", "require_client_certificate"}, dpath)
    inline = check_sds(d.common_tls_context, w, join(dpath, "common_tls_context"))
    if inline is not None and inline.match_typed_subject_alt_names:
        raise w.error(
            join(dpath, "common_tls_context.combined_validation_context"),
            "SAN matching on inbound is not supported (use the rbac filter)",
        )
    return DownstreamTls(require_client_cert=d.require_client_certificate.value)


def _http_listener(
    lst: listener_pb2.Listener,
    chain: listener_components_pb2.FilterChain,
    w: Where,
    cpath: str,
    tls: DownstreamTls | None,
    inbound: bool,
) -> ListenerSpec:
    fpath = join(cpath, "filters[0].typed_config")
    hcm = w.unpack(chain.filters[0].typed_config, hcm_pb2.HttpConnectionManager, fpath)
    # Fields that do not change what the sidecar does with a request are accepted.
    w.only(
        hcm,
        {
            "codec_type",
            "stat_prefix",
            "rds",
            "route_config",
            "http_filters",
            "use_remote_address",
            "forward_client_cert_details",
            "set_current_client_cert_details",
            "generate_request_id",
            "normalize_path",
            "merge_slashes",
        },
        fpath,
    )
    route_name: str | None = None
    inline: RouteTable | None = None
    spec = hcm.WhichOneof("route_specifier")
    if spec == "rds":
        w.only(hcm.rds, {"config_source", "route_config_name"}, join(fpath, "rds"))
        src = hcm.rds.config_source.WhichOneof("config_source_specifier")
        if src not in ("ads", None):
            raise w.error(join(fpath, "rds.config_source"), "only `ads {}` is supported")
        if not hcm.rds.route_config_name:
            raise w.error(join(fpath, "rds.route_config_name"), "empty route config name")
        route_name = hcm.rds.route_config_name
    elif spec == "route_config":
        inline = route_table(hcm.route_config, w, join(fpath, "route_config"))
    else:
        raise w.error(fpath, "the http_connection_manager needs rds or route_config")
    rbac_filters: list[tuple[rbac_pb2.RBAC | None, str]] = []
    request_filters: list[Any] = []
    filters = list(hcm.http_filters)
    if not filters or filters[-1].name != ROUTER:
        raise w.error(join(fpath, "http_filters"), f"{ROUTER} must be the last http filter")
    for i, f in enumerate(filters):
        path = join(fpath, f"http_filters[{i}]")
        w.only(f, {"name", "typed_config"}, path)
        tpath = join(path, "typed_config")
        if f.name == ROUTER:
            if i != len(filters) - 1:
                raise w.error(path, f"{ROUTER} must be the last http filter")
            r = w.unpack(f.typed_config, router_pb2.Router, tpath)
            w.only(r, {"suppress_envoy_headers"}, tpath)
        elif f.name == HTTP_FAULT:
            fault = w.unpack(f.typed_config, fault_pb2.HTTPFault, tpath)
            # Faults are configured per route (typed_per_filter_config); the filter only enables.
            w.only(fault, set(), tpath)
        elif f.name == HTTP_RBAC:
            hr = w.unpack(f.typed_config, http_rbac_pb2.RBAC, tpath)
            w.only(hr, {"rules", "rules_stat_prefix"}, tpath)
            rbac_filters.append((hr.rules if hr.HasField("rules") else None, join(tpath, "rules")))
        elif f.name in REQUEST_FILTERS:
            # Imported only for a listener that has one: JWT checks load cryptography
            # (~8 MB RSS), which a sidecar without JWT policies never needs.
            from hyphal.proxy.compile import filters as filters_compile

            if not inbound:
                raise w.error(join(path, "name"), f"{f.name} is supported on inbound listeners")
            if rbac_filters:
                raise w.error(join(path, "name"), f"{f.name} must come before the rbac filters "
                              "(the hyphal sidecar runs request filters, then RBAC)")
            request_filters.append(
                filters_compile.jwt_authn(f.typed_config, w, tpath)
                if f.name == JWT_AUTHN
                else filters_compile.local_ratelimit(f.typed_config, w, tpath, lst.name))
        else:
            raise w.error(join(path, "name"), f"http filter {f.name!r} is not supported")
    kind = ListenerKind.INBOUND_HTTP if inbound else ListenerKind.OUTBOUND_HTTP
    return ListenerSpec(
        name=lst.name,
        host=lst.address.socket_address.address,
        port=lst.address.socket_address.port_value,
        kind=kind,
        tls=tls,
        route_config=route_name,
        inline_routes=inline,
        rbac=rbac_compile.engine(rbac_filters, w),
        stat_prefix=hcm.stat_prefix or lst.stat_prefix or lst.name,
        request_filters=tuple(request_filters),
    )


def _tcp_listener(
    lst: listener_pb2.Listener,
    chain: listener_components_pb2.FilterChain,
    w: Where,
    cpath: str,
    tls: DownstreamTls | None,
    inbound: bool,
) -> ListenerSpec:
    rbac_filters: list[tuple[rbac_pb2.RBAC | None, str]] = []
    n = len(chain.filters)
    for i, f in enumerate(chain.filters[:-1]):
        path = join(cpath, f"filters[{i}]")
        if f.name != NET_RBAC:
            raise w.error(
                join(path, "name"), f"network filter {f.name!r} is not supported before {TCP_PROXY}"
            )
        nr = w.unpack(f.typed_config, net_rbac_pb2.RBAC, join(path, "typed_config"))
        w.only(nr, {"rules", "stat_prefix"}, join(path, "typed_config"))
        rbac_filters.append(
            (nr.rules if nr.HasField("rules") else None, join(path, "typed_config.rules"))
        )
    tpath = join(cpath, f"filters[{n - 1}].typed_config")
    tp = w.unpack(chain.filters[-1].typed_config, tcp_proxy_pb2.TcpProxy, tpath)
    w.only(tp, {"stat_prefix", "cluster"}, tpath)
    if not tp.cluster:
        raise w.error(join(tpath, "cluster"), "tcp_proxy needs a cluster")
    return ListenerSpec(
        name=lst.name,
        host=lst.address.socket_address.address,
        port=lst.address.socket_address.port_value,
        kind=ListenerKind.INBOUND_TCP if inbound else ListenerKind.OUTBOUND_TCP,
        tls=tls,
        rbac=rbac_compile.engine(rbac_filters, w),
        tcp_cluster=tp.cluster,
        stat_prefix=tp.stat_prefix or lst.name,
    )
