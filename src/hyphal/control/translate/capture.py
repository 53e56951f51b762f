"""Transparent-capture listeners for sidecars whose node metadata says INTERCEPTION_MODE
REDIRECT (iptables sends the pod's traffic to the sidecar: Istio's virtualOutbound 15001 and
virtualInbound 15006, hyphal.kube.inject.iptables_rules).

Expressed as Envoy does: the two capture listeners carry `use_original_dst: true`; the
listeners they hand connections to carry `bind_to_port: false` and the address the
connection was really going to:
- `virtualOutbound` (0.0.0.0:15001): its own chain is the `outbound_http` HCM (HTTP routed by
  Host/authority); TCP service ports get `outbound|<port>||<fqdn>` unbound tcp_proxy
  listeners at the service VIP (node metadata SERVICE_VIPS) and every endpoint address;
- `virtualInbound` (0.0.0.0:15006): its own chain is a tcp_proxy to `BlackHoleCluster` (no
  endpoints: a port the workload does not declare is refused); `inbound|<port>` listeners
  become unbound at INSTANCE_IP:<port>, so mTLS, request filters and RBAC apply unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hyphal.control.registry.model import RegistryView
from hyphal.control.registry.node import ProxyNode
from hyphal.control.translate import naming
from hyphal.control.translate.inputs import ServiceInfo
from hyphal.control.translate.listeners import (
    fault_filter,
    http_connection_manager,
    router_filter,
)
from hyphal.control.translate.pb import (
    Message,
    address_pb2,
    base_pb2,
    cluster_pb2,
    duration,
    listener_components_pb2,
    listener_pb2,
    pack,
    tcp_proxy_pb2,
)
from hyphal.control.translate.routes import has_fault

REDIRECT = "REDIRECT"
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
WILDCARD = "0.0.0.0"

Resources = dict[str, dict[str, Message]]
TcpTarget = Callable[[ServiceInfo, int], str]


def redirect(node: ProxyNode) -> bool:
    return node.is_sidecar and node.interception_mode == REDIRECT


def _address(ip: str, port: int) -> Message:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def _tcp_proxy_chain(stat_prefix: str, cluster: str) -> Message:
    f = listener_components_pb2.Filter(
        name=naming.TCP_PROXY_FILTER,
        typed_config=pack(tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster)))
    return listener_components_pb2.FilterChain(filters=[f])


def virtual_outbound(fault: bool) -> Message:
    filters = ([fault_filter()] if fault else []) + [router_filter()]
    hcm = http_connection_manager(naming.OUTBOUND_HTTP, filters, rds_name=naming.OUTBOUND_HTTP)
    lst = listener_pb2.Listener(
        name=VIRTUAL_OUTBOUND, address=_address(WILDCARD, OUTBOUND_CAPTURE_PORT),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name=naming.HCM_FILTER, typed_config=pack(hcm))])])
    lst.use_original_dst.value = True
    return lst


def virtual_inbound() -> Message:
    lst = listener_pb2.Listener(
        name=VIRTUAL_INBOUND, address=_address(WILDCARD, INBOUND_CAPTURE_PORT),
        traffic_direction=base_pb2.INBOUND,
        filter_chains=[_tcp_proxy_chain(VIRTUAL_INBOUND, BLACKHOLE_CLUSTER)])
    lst.use_original_dst.value = True
    return lst


def blackhole_cluster() -> Message:
    """Istio's BlackHoleCluster: STATIC with no endpoints, so a connection is closed."""
    c = cluster_pb2.Cluster(name=BLACKHOLE_CLUSTER, type=cluster_pb2.Cluster.STATIC,
                            connect_timeout=duration(1.0),
                            lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)
    c.load_assignment.cluster_name = BLACKHOLE_CLUSTER
    return c


def tcp_addresses(node: ProxyNode, registry: RegistryView, svc: ServiceInfo,
                  port: int) -> list[tuple[str, int]]:
    """Where a captured connection to TCP service port `port` may be going: its VIP first,
    then every endpoint address (a client that resolved an endpoint directly)."""
    found: list[tuple[str, int]] = []
    vip = node.service_vips.get(svc.host)
    if vip:
        found.append((vip, port))
    for ep in registry.endpoints_for(svc.host, port):
        if (ep.address, ep.port) not in found:
            found.append((ep.address, ep.port))
    return found


def unbound_tcp_listener(name: str, addresses: Sequence[tuple[str, int]],
                         cluster: str) -> Message:
    ip, port = addresses[0]
    lst = listener_pb2.Listener(name=name, address=_address(ip, port),
                                traffic_direction=base_pb2.OUTBOUND,
                                filter_chains=[_tcp_proxy_chain(name, cluster)])
    lst.bind_to_port.value = False
    for extra_ip, extra_port in addresses[1:]:
        lst.additional_addresses.add().address.CopyFrom(_address(extra_ip, extra_port))
    return lst


def add(out: Resources, registry: RegistryView, node: ProxyNode,
        services: Sequence[ServiceInfo], tcp_target: TcpTarget) -> None:
    """Rewrite a REDIRECT sidecar's listeners in `out` for capture (see the module doc)."""
    listeners = out[naming.LISTENER_TYPE]
    clusters = out[naming.CLUSTER_TYPE]
    if node.outbound_http_port == OUTBOUND_CAPTURE_PORT:
        listeners.pop(naming.OUTBOUND_HTTP, None)  # virtualOutbound takes its place
    rc = out[naming.ROUTE_TYPE].get(naming.OUTBOUND_HTTP)
    listeners[VIRTUAL_OUTBOUND] = virtual_outbound(rc is not None and has_fault(rc))
    listeners[VIRTUAL_INBOUND] = virtual_inbound()
    clusters[BLACKHOLE_CLUSTER] = blackhole_cluster()
    for np in node.ports:
        name = naming.inbound_listener(np.port)
        lst = listeners.get(name)
        if lst is None:
            continue
        lst.address.CopyFrom(_address(node.instance_ip, np.port))
        lst.bind_to_port.value = False
    for svc in services:
        for p in svc.ports:
            if p.is_http:
                continue
            name = naming.upstream_listener(p.number, svc.host)
            addresses = tcp_addresses(node, registry, svc, p.number)
            if not addresses:
                listeners.pop(name, None)
                continue
            target = tcp_target(svc, p.number)
            if target not in clusters:
                target = naming.outbound_cluster(p.number, "", svc.host)
            listeners[name] = unbound_tcp_listener(name, addresses, target)
