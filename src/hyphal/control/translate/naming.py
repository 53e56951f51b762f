"""Names shared by the translators: type URLs, cluster/listener names, SPIFFE ids, host spellings.

Everything here follows docs/xds-conventions.md; change both together.
"""

from __future__ import annotations

from typing import Final

LISTENER_TYPE: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
ALL_TYPES: Final = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE, SECRET_TYPE)

OUTBOUND_HTTP: Final = "outbound_http"
ROOTCA: Final = "ROOTCA"
DEFAULT_CERT: Final = "default"
ROOT_NAMESPACE: Final = "hyphal-system"
CLUSTER_DOMAIN: Final = "svc.cluster.local"
DEFAULT_TRUST_DOMAIN: Final = "cluster.local"

HCM_FILTER: Final = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER: Final = "envoy.filters.network.tcp_proxy"
NETWORK_RBAC_FILTER: Final = "envoy.filters.network.rbac"
HTTP_RBAC_FILTER: Final = "envoy.filters.http.rbac"
FAULT_FILTER: Final = "envoy.filters.http.fault"
ROUTER_FILTER: Final = "envoy.filters.http.router"
TLS_TRANSPORT: Final = "envoy.transport_sockets.tls"
HYPHAL_METADATA: Final = "hyphal"


def service_fqdn(name: str, namespace: str) -> str:
    """`product`, `shop` -> `product.shop.svc.cluster.local`."""
    return f"{name}.{namespace}.{CLUSTER_DOMAIN}"


def outbound_cluster(port: int, subset: str, host: str) -> str:
    """Istio's outbound cluster name: `outbound|<port>|<subset>|<fqdn>`."""
    return f"outbound|{port}|{subset}|{host}"


def inbound_cluster(port: int) -> str:
    """The sidecar's cluster to its own app for workload port `port`: `inbound|<port>||`."""
    return f"inbound|{port}||"


def inbound_listener(port: int) -> str:
    return f"inbound|{port}"


def upstream_listener(port: int, host: str) -> str:
    """Per-upstream sidecar listener (and its RouteConfiguration for HTTP)."""
    return f"outbound|{port}||{host}"


def virtual_host_name(host: str, port: int) -> str:
    return f"{host}:{port}"


def proxyless_route_name(host: str, port: int) -> str:
    return f"{host}:{port}"


def principal_to_spiffe(principal: str) -> str:
    """Istio principal `td/ns/x/sa/y` -> `spiffe://td/ns/x/sa/y` (already-prefixed ids pass)."""
    if principal.startswith("spiffe://"):
        return principal
    return f"spiffe://{principal}"


def host_spellings(fqdn: str, node_namespace: str | None) -> list[str]:
    """Every name a client may use for a host, as seen from `node_namespace`.

    For a Service FQDN `name.ns.svc.cluster.local`: `name` (only from the same namespace, where
    it is unambiguous), `name.ns` and the FQDN. Other hosts (ServiceEntry) are
    spelled only as written.
    """
    suffix = "." + CLUSTER_DOMAIN
    if not fqdn.endswith(suffix):
        return [fqdn]
    short = fqdn[: -len(suffix)]
    parts = short.split(".")
    if len(parts) != 2:
        return [fqdn]
    name, ns = parts
    out = [name] if node_namespace == ns else []
    out += [f"{name}.{ns}", fqdn]
    return out


def virtual_host_domains(spellings: list[str], port: int, bare: bool) -> list[str]:
    """Domains of a virtual host: each spelling with `:port`, and bare too when `bare`."""
    out: list[str] = []
    for s in spellings:
        if bare:
            out.append(s)
        out.append(f"{s}:{port}")
    return out
