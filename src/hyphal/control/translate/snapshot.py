"""translate(): resources + registry + node -> every xDS resource that node may see.

The pure heart of the control plane (Istio pilot's cds/eds/lds/rds in one pass): clusters and
endpoints first, so that routes and listeners can only name clusters that exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hyphal.config.models import PeerAuthentication, VirtualService
from hyphal.config.models.destination_rule import ConsistentHashLB
from hyphal.config.models.virtual_service import Destination, HTTPMatchRequest
from hyphal.control.registry.model import RegistryView
from hyphal.control.registry.node import NodePort, ProxyNode
from hyphal.control.translate import capture, gateway_api, naming, rbac
from hyphal.control.translate import jwt as jwt_translate
from hyphal.control.translate import ratelimit as ratelimit_translate
from hyphal.control.translate.clusters import build_cluster, build_static_cluster
from hyphal.control.translate.endpoints import build_cla
from hyphal.control.translate.inputs import MeshIndex, ServiceInfo, visible
from hyphal.control.translate.listeners import (
    inbound_listener,
    outbound_http_listener,
    proxyless_api_listener,
    upstream_port_listener,
)
from hyphal.control.translate.pb import Message
from hyphal.control.translate.policy import hash_policies, pick_rule, resolve
from hyphal.control.translate.routes import (
    build_routes,
    default_route,
    has_fault,
    route_configuration,
    virtual_host,
)
from hyphal.control.translate.secrets import build_root_ca

Resources = dict[str, dict[str, Message]]


def as_proxy_node(node: Any) -> ProxyNode:
    """Accept our ProxyNode or the ADS server's NodeInfo (id, cluster, metadata)."""
    if isinstance(node, ProxyNode):
        return node
    return ProxyNode.from_metadata(node.id, getattr(node, "cluster", ""), node.metadata or {})


@dataclass(slots=True)
class _Clusters:
    """Clusters built so far for one node, and what routes need to know about them."""

    messages: dict[str, Message] = field(default_factory=dict)
    hashing: dict[str, ConsistentHashLB | None] = field(default_factory=dict)

    def hash_for(self, cluster: str) -> Sequence[Message]:
        return hash_policies(self.hashing.get(cluster))


def _outbound(
    index: MeshIndex,
    registry: RegistryView,
    node: ProxyNode,
    services: Sequence[ServiceInfo],
    trust_domain: str,
    out: Resources,
) -> _Clusters:
    proxyless = not node.is_sidecar
    cl = _Clusters()
    for svc in services:
        rule = pick_rule(index, svc.host, node.namespace, svc.namespace)
        sans: list[str] | None = None
        if svc.mesh:
            sans = sorted(
                registry.identities_for(svc.host) | index.service_accounts(svc.host, trust_domain)
            )
        subsets = [""] + ([s.name for s in rule.spec.subsets] if rule is not None else [])
        for port in svc.ports:
            if proxyless and not port.is_http:
                continue
            eps = registry.endpoints_for(svc.host, port.number)
            for subset in subsets:
                r = resolve(rule, port.number, subset)
                if r is None:
                    continue
                name = naming.outbound_cluster(port.number, subset, svc.host)
                cl.messages[name] = build_cluster(
                    name, r.params, tls_sans=sans, proxyless=proxyless,
                    http2=port.protocol in ("GRPC", "HTTP2"),
                )
                cl.hashing[name] = r.consistent_hash
                out[naming.ENDPOINT_TYPE][name] = build_cla(name, eps, r.subset_labels)
    out[naming.CLUSTER_TYPE].update(cl.messages)
    return cl


def _virtual_service(
    index: MeshIndex, host: str, node_ns: str, svc_ns: str
) -> VirtualService | None:
    found = [
        vs
        for vs in index.virtual_services
        if visible(vs.spec.export_to, vs.namespace, node_ns)
        and vs.spec.http
        and any(index.resolve_host(h, vs.namespace) == host for h in vs.spec.hosts)
    ]
    for ns in (node_ns, svc_ns):
        for vs in found:
            if vs.namespace == ns:
                return vs
    return found[0] if found else None


def _service_routes(
    index: MeshIndex, node: ProxyNode, svc: ServiceInfo, port: int, cl: _Clusters
) -> list[Message]:
    """Envoy routes for one service port as `node` sees it (VirtualService or default)."""
    vs = _virtual_service(index, svc.host, node.namespace, svc.namespace)
    routes: list[Message] = []
    if vs is not None:

        def resolve_dest(d: Destination) -> str | None:
            host = index.resolve_host(d.host, vs.namespace)
            target = index.services.get(host)
            if target is None:
                return None
            if d.port is not None:
                number = d.port.number
            elif len(target.ports) == 1:
                number = target.ports[0].number
            elif target.port(port) is not None:
                number = port
            else:
                return None
            name = naming.outbound_cluster(number, d.subset or "", host)
            return name if name in cl.messages else None

        for http in vs.spec.http:
            matches: list[HTTPMatchRequest | None] = [
                m
                for m in http.match
                if (m.port is None or m.port == port)
                and all(node.labels.get(k) == v for k, v in m.source_labels.items())
            ]
            if http.match and not matches:
                continue
            routes += build_routes(http, resolve_dest, cl.hash_for, matches)
    else:  # no VirtualService: Gateway API routes attached to the Service (GAMMA), if any
        routes = gateway_api.mesh_routes(index, svc, port, cl.messages, cl.hash_for)
    if not routes:
        name = naming.outbound_cluster(port, "", svc.host)
        if name in cl.messages:
            routes.append(default_route(name, cl.hash_for(name)))
    return routes


def _tcp_cluster(index: MeshIndex, node: ProxyNode, svc: ServiceInfo, port: int) -> str:
    """The cluster a per-upstream TCP listener forwards to (heaviest VS tcp destination)."""
    default = naming.outbound_cluster(port, "", svc.host)
    for vs in index.virtual_services:
        if not visible(vs.spec.export_to, vs.namespace, node.namespace):
            continue
        if not any(index.resolve_host(h, vs.namespace) == svc.host for h in vs.spec.hosts):
            continue
        for tcp in vs.spec.tcp:
            if tcp.match and not any(m.port in (None, port) for m in tcp.match):
                continue
            best = max(tcp.route, key=lambda d: d.effective_weight).destination
            number = best.port.number if best.port is not None else port
            host = index.resolve_host(best.host, vs.namespace)
            return naming.outbound_cluster(number, best.subset or "", host)
    return default


def _mtls(index: MeshIndex, node: ProxyNode, port: NodePort) -> str:
    """PeerAuthentication mode for a workload port: workload > namespace > mesh (STRICT when
    nothing says otherwise): STRICT, PERMISSIVE (mTLS or plaintext) or DISABLE."""

    def applies(pa: PeerAuthentication) -> bool:
        sel = pa.spec.selector
        return sel is None or all(node.labels.get(k) == v for k, v in sel.match_labels.items())

    def rank(pa: PeerAuthentication) -> int:
        selective = pa.spec.selector is not None and bool(pa.spec.selector.match_labels)
        return (
            0
            if pa.namespace == node.namespace and selective
            else (1 if pa.namespace == node.namespace else 2)
        )

    candidates = sorted(
        (
            pa
            for pa in index.peer_authentications
            if pa.namespace in (node.namespace, naming.ROOT_NAMESPACE) and applies(pa)
        ),
        key=lambda pa: (rank(pa), pa.name),
    )
    for pa in candidates:
        mode = None
        if port.port in pa.spec.port_level_mtls:
            mode = pa.spec.port_level_mtls[port.port].mode
        if mode in (None, "UNSET") and pa.spec.mtls is not None:
            mode = pa.spec.mtls.mode
        if mode not in (None, "UNSET"):
            return str(mode)
    return "STRICT"


def _sidecar(
    index: MeshIndex, registry: RegistryView, node: ProxyNode, trust_domain: str, out: Resources
) -> None:
    services = index.visible_services(node.namespace)
    cl = _outbound(index, registry, node, services, trust_domain, out)
    by_host = {s.host: s for s in services}
    vhosts: list[Message] = []
    for svc in services:
        first = svc.first_http_port
        for p in svc.ports:
            if not p.is_http:
                continue
            vhosts.append(
                virtual_host(
                    naming.virtual_host_name(svc.host, p.number),
                    naming.virtual_host_domains(
                        naming.host_spellings(svc.host, node.namespace),
                        p.number,
                        bare=p.number in (first, 80),
                    ),
                    _service_routes(index, node, svc, p.number, cl),
                )
            )
    rc = route_configuration(naming.OUTBOUND_HTTP, vhosts)
    out[naming.ROUTE_TYPE][naming.OUTBOUND_HTTP] = rc
    if node.outbound_http_port is not None:
        out[naming.LISTENER_TYPE][naming.OUTBOUND_HTTP] = outbound_http_listener(
            node.outbound_http_port, fault=has_fault(rc)
        )
    for key, listen_port in sorted(node.upstream_ports.items()):
        host, _, port_s = key.rpartition(":")
        usvc = by_host.get(host)
        if usvc is None or not port_s.isdigit() or usvc.port(int(port_s)) is None:
            continue  # not visible to this node, or no such port: nothing to listen for
        number = int(port_s)
        name = naming.upstream_listener(number, host)
        info = usvc.port(number)
        assert info is not None
        if info.is_http:
            urc = route_configuration(
                name,
                [virtual_host(name, ["*"], _service_routes(index, node, usvc, number, cl))],
            )
            out[naming.ROUTE_TYPE][name] = urc
            out[naming.LISTENER_TYPE][name] = upstream_port_listener(
                name, listen_port, http=True, cluster="", fault=has_fault(urc)
            )
        else:
            target = _tcp_cluster(index, node, usvc, number)
            if target not in cl.messages:
                target = naming.outbound_cluster(number, "", host)
            out[naming.LISTENER_TYPE][name] = upstream_port_listener(
                name, listen_port, http=False, cluster=target
            )
    policies = [
        p
        for p in index.authorization_policies
        if rbac.selects(p, node.namespace, dict(node.labels))
    ]
    labels = dict(node.labels)
    request_filters = [  # inbound HTTP, before rbac: jwt_authn, then local_ratelimit
        f
        for f in (
            jwt_translate.for_workload(index.request_authentications, node.namespace, labels, {}),
            ratelimit_translate.for_workload(
                index.rate_limit_policies, index, node.namespace, node.workload_name, labels,
                trust_domain,
            ),
        )
        if f is not None
    ]
    for np in node.ports:
        if not np.inbound_port:
            continue
        http = np.protocol in ("HTTP", "HTTP2", "GRPC")
        mode = _mtls(index, node, np)
        out[naming.LISTENER_TYPE][naming.inbound_listener(np.port)] = inbound_listener(
            np.port,
            np.inbound_port,
            http=http,
            tls=mode != "DISABLE",
            deny=rbac.build_rbac(policies, "DENY", tcp=not http),
            allow=rbac.build_rbac(policies, "ALLOW", tcp=not http),
            ip=node.instance_ip,
            permissive=mode == "PERMISSIVE",
            request_filters=request_filters if http else (),
        )
        cname = naming.inbound_cluster(np.port)
        out[naming.CLUSTER_TYPE][cname] = build_static_cluster(
            cname, "127.0.0.1", np.app_port, service=_inbound_service(index, node, np),
            http2=np.protocol in ("GRPC", "HTTP2"),
        )
    if capture.redirect(node):  # iptables capture: virtualOutbound/virtualInbound
        capture.add(out, registry, node, services,
                    lambda svc, port: _tcp_cluster(index, node, svc, port))


def _inbound_service(index: MeshIndex, node: ProxyNode, np: NodePort) -> str:
    """The FQDN of the Service whose port targets workload port `np` of `node` (the first by
    host when several do; "" when none): the destination side's `destination_service`."""
    for svc in index.services.values():  # sorted by host
        if not svc.mesh or svc.namespace != node.namespace or not svc.selector:
            continue
        if any(node.labels.get(k) != v for k, v in svc.selector.items()):
            continue
        for p in svc.ports:
            target = p.number if p.target is None else p.target
            if isinstance(target, str) and not target.isdigit():
                if target == np.name:
                    return svc.host
            elif int(target) == np.port:
                return svc.host
    return ""


def _proxyless(
    index: MeshIndex, registry: RegistryView, node: ProxyNode, trust_domain: str, out: Resources
) -> None:
    services = index.visible_services(node.namespace)
    cl = _outbound(index, registry, node, services, trust_domain, out)
    for svc in services:
        first = svc.first_http_port
        spellings = naming.host_spellings(svc.host, node.namespace)
        for p in svc.ports:
            if not p.is_http:
                continue
            rds = naming.proxyless_route_name(svc.host, p.number)
            rc = route_configuration(
                rds,
                [
                    virtual_host(
                        naming.virtual_host_name(svc.host, p.number),
                        naming.virtual_host_domains(
                            spellings, p.number, bare=p.number in (first, 80)
                        ),
                        _service_routes(index, node, svc, p.number, cl),
                    )
                ],
            )
            out[naming.ROUTE_TYPE][rds] = rc
            fault = has_fault(rc)
            for s in spellings:
                lname = f"{s}:{p.number}"
                out[naming.LISTENER_TYPE][lname] = proxyless_api_listener(lname, rds, fault=fault)


def translate(
    resources: Iterable[Any] | MeshIndex,
    registry: RegistryView,
    node: Any,
    ca_bundle_pem: bytes,
    trust_domain: str = naming.DEFAULT_TRUST_DOMAIN,
) -> Resources:
    """Every resource `node` may see: type URL -> name -> message (not packed).

    `resources` is a ResourceSet (or any iterable of resource models), or a prebuilt MeshIndex
    (what the snapshot source passes, to index once per config version). `node` is a
    ProxyNode or the ADS server's NodeInfo.
    """
    index = resources if isinstance(resources, MeshIndex) else MeshIndex.build(resources)
    pnode = as_proxy_node(node)
    out: Resources = {t: {} for t in naming.ALL_TYPES}
    if pnode.is_sidecar:
        _sidecar(index, registry, pnode, trust_domain, out)
    else:
        _proxyless(index, registry, pnode, trust_domain, out)
    out[naming.SECRET_TYPE][naming.ROOTCA] = build_root_ca(ca_bundle_pem)
    return out
