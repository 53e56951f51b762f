"""translate() on a small shop mesh: names, weights, defaults, TLS SANs, endpoints, validity."""

from __future__ import annotations

from translate_helpers import CA, SHOP, load, proxyless, routes_of, run, sidecar, unpack

from hyphal.control.translate import naming
from hyphal.control.translate.consistency import check_consistency
from hyphal.control.translate.pb import cluster_pb2, hcm_pb2, tls_pb2

CANARY = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: product, namespace: shop}
spec:
  host: product
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
  hosts: [product]
  http:
  - route:
    - {destination: {host: product, subset: v1}, weight: 95}
    - {destination: {host: product, subset: v2}, weight: 5}
    - {destination: {host: product, subset: v3}, weight: 0}
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: product-v2, namespace: shop}
spec:
  labels: {app: product, version: v2}
  serviceAccount: product-v2
  ports: [{name: web, port: 9080}]
"""

FQDN = "product.shop.svc.cluster.local"
P1 = sidecar(
    "product-v1",
    "shop",
    {"app": "product", "version": "v1"},
    "product",
    base=21010,
    ports=[
        {"name": "web", "port": 9080, "protocol": "HTTP", "app_port": 21011, "inbound_port": 21012}
    ],
)
P2 = sidecar(
    "product-v2",
    "shop",
    {"app": "product", "version": "v2"},
    "product-v2",
    base=21020,
    ports=[
        {"name": "web", "port": 9080, "protocol": "HTTP", "app_port": 21021, "inbound_port": 21022}
    ],
)
FRONT = sidecar("frontend", "shop", {"app": "frontend"}, "frontend", base=21000)


def test_cluster_names_and_types() -> None:
    out = run(load(SHOP, CANARY), FRONT, P1, P2)
    assert set(out[naming.CLUSTER_TYPE]) == {
        f"outbound|8080||{FQDN}",
        f"outbound|8080|v1|{FQDN}",
        f"outbound|8080|v2|{FQDN}",
        "outbound|8080||frontend.shop.svc.cluster.local",
        "inbound|8080||",
    }
    assert set(out[naming.ENDPOINT_TYPE]) == set(out[naming.CLUSTER_TYPE]) - {"inbound|8080||"}
    c = out[naming.CLUSTER_TYPE][f"outbound|8080|v1|{FQDN}"]
    assert c.type == cluster_pb2.Cluster.EDS and c.eds_cluster_config.eds_config.HasField("ads")
    assert c.connect_timeout.seconds == 10
    assert c.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    t = c.circuit_breakers.thresholds[0]
    assert t.max_connections.value == t.max_requests.value == 2**32 - 1
    inbound = out[naming.CLUSTER_TYPE]["inbound|8080||"]
    sa = inbound.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.0.1", 21001)
    assert check_consistency(out) == []


def test_weighted_route_drops_zero_weight_and_unknown_subsets() -> None:
    out = run(load(SHOP, CANARY), FRONT, P1, P2)
    (route,) = routes_of(out, f"{FQDN}:8080")
    wc = route.route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in wc] == [
        (f"outbound|8080|v1|{FQDN}", 95),
        (f"outbound|8080|v2|{FQDN}", 5),
    ]
    assert route.match.prefix == "/"
    assert route.route.timeout.seconds == 0 and route.route.timeout.nanos == 0


def test_default_route_with_istio_default_retries() -> None:
    out = run(load(SHOP), FRONT)
    (route,) = routes_of(out, "frontend.shop.svc.cluster.local:8080")
    assert route.route.cluster == "outbound|8080||frontend.shop.svc.cluster.local"
    rp = route.route.retry_policy
    assert rp.num_retries.value == 2
    assert (
        rp.retry_on == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert list(rp.retriable_status_codes) == [503]


def test_virtual_host_domains_follow_the_conventions() -> None:
    out = run(load(SHOP), FRONT)
    vh = next(
        v for v in out[naming.ROUTE_TYPE]["outbound_http"].virtual_hosts if v.name == f"{FQDN}:8080"
    )
    assert list(vh.domains) == [
        "product",
        "product:8080",
        "product.shop",
        "product.shop:8080",
        FQDN,
        f"{FQDN}:8080",
    ]
    other_ns = run(load(SHOP), sidecar("x", "other", {"app": "x"}, "x"))
    vh = next(
        v
        for v in other_ns[naming.ROUTE_TYPE]["outbound_http"].virtual_hosts
        if v.name == f"{FQDN}:8080"
    )
    assert "product" not in vh.domains and "product.shop" in vh.domains


def test_subset_endpoints_and_metadata() -> None:
    out = run(load(SHOP, CANARY), FRONT, P1, P2)
    v2 = out[naming.ENDPOINT_TYPE][f"outbound|8080|v2|{FQDN}"]
    (group,) = v2.endpoints
    assert group.HasField("locality")
    (ep,) = group.lb_endpoints
    assert ep.endpoint.address.socket_address.port_value == 21022
    assert ep.load_balancing_weight.value >= 1
    md = ep.metadata.filter_metadata["hyphal"]
    assert md["identity"] == "spiffe://cluster.local/ns/shop/sa/product-v2"
    assert md["labels"]["version"] == "v2"
    assert len(out[naming.ENDPOINT_TYPE][f"outbound|8080||{FQDN}"].endpoints[0].lb_endpoints) == 2


def test_upstream_tls_sans_come_from_registry_and_workloads() -> None:
    out = run(load(SHOP, CANARY), FRONT, P2)  # P1 not connected: its Workload still counts
    c = out[naming.CLUSTER_TYPE][f"outbound|8080||{FQDN}"]
    assert c.transport_socket.name == "envoy.transport_sockets.tls"
    ctx = unpack(c.transport_socket.typed_config, tls_pb2.UpstreamTlsContext)
    assert ctx.sni == f"outbound|8080||{FQDN}"
    assert [s.name for s in ctx.common_tls_context.tls_certificate_sds_secret_configs] == [
        "default"
    ]
    cvc = ctx.common_tls_context.combined_validation_context
    assert cvc.validation_context_sds_secret_config.name == "ROOTCA"
    sans = [m.matcher.exact for m in cvc.default_validation_context.match_typed_subject_alt_names]
    assert sans == [
        "spiffe://cluster.local/ns/shop/sa/product",
        "spiffe://cluster.local/ns/shop/sa/product-v2",
    ]


def test_outbound_and_inbound_listeners() -> None:
    out = run(load(SHOP), FRONT)
    lst = out[naming.LISTENER_TYPE]["outbound_http"]
    assert lst.address.socket_address.port_value == 21000
    hcm = unpack(lst.filter_chains[0].filters[0].typed_config, hcm_pb2.HttpConnectionManager)
    assert hcm.rds.route_config_name == "outbound_http" and hcm.rds.config_source.HasField("ads")
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]
    inbound = out[naming.LISTENER_TYPE]["inbound|8080"]
    assert inbound.address.socket_address.port_value == 21002
    chain = inbound.filter_chains[0]
    ctx = unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
    assert ctx.require_client_certificate.value is True
    assert ctx.common_tls_context.validation_context_sds_secret_config.name == "ROOTCA"
    hcm = unpack(chain.filters[0].typed_config, hcm_pb2.HttpConnectionManager)
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]
    assert hcm.route_config.virtual_hosts[0].routes[0].route.cluster == "inbound|8080||"


def test_root_ca_secret() -> None:
    out = run(load(SHOP), FRONT)
    s = out[naming.SECRET_TYPE]["ROOTCA"]
    assert s.validation_context.trusted_ca.inline_bytes == CA
    assert "default" not in out[naming.SECRET_TYPE]


def test_every_resource_serializes_as_its_type() -> None:
    for node in (FRONT, proxyless()):
        out = run(load(SHOP, CANARY), node, P1, P2)
        for type_url, by_name in out.items():
            for msg in by_name.values():
                assert "type.googleapis.com/" + msg.DESCRIPTOR.full_name == type_url
                again = type(msg).FromString(msg.SerializeToString())
                assert again == msg
