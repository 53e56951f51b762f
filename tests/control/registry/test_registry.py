"""Registry: sidecar nodes become endpoints of the Services that select them."""

from __future__ import annotations

import pytest

from hyphal.control.registry import (
    Endpoint,
    NodeMetadataError,
    PortRecord,
    ProxyNode,
    Registry,
    RegistryView,
    ServiceRecord,
)

PRODUCT = ServiceRecord(
    name="product",
    namespace="shop",
    host="product.shop.svc.cluster.local",
    selector={"app": "product"},
    ports=(PortRecord(8080, "http", "HTTP", "web"), PortRecord(9090, "grpc", "GRPC", 9090)),
)


def node(node_id: str, labels: dict[str, str], ns: str = "shop", **extra: object) -> ProxyNode:
    md: dict[str, object] = {
        "NAMESPACE": ns,
        "SERVICE_ACCOUNT": "product",
        "LABELS": labels,
        "INSTANCE_IP": "127.0.0.1",
        "PROXY_MODE": "sidecar",
        "OUTBOUND_HTTP_PORT": 21000.0,  # Struct numbers arrive as floats
        "PORTS": [
            {
                "name": "web",
                "port": 8000.0,
                "protocol": "http",
                "app_port": 21001,
                "inbound_port": 21002,
            },
            {
                "name": "grpc",
                "port": 9090,
                "protocol": "GRPC",
                "app_port": 21003,
                "inbound_port": 21004,
            },
        ],
    }
    md.update(extra)
    return ProxyNode.from_metadata(node_id, "product-v1", md)


def test_node_metadata_is_parsed_to_typed_ports() -> None:
    n = node("product-v1-0.shop", {"app": "product"})
    assert n.is_sidecar and n.namespace == "shop" and n.outbound_http_port == 21000
    assert n.ports[0].port == 8000 and n.ports[0].protocol == "HTTP"
    assert n.ports[1].inbound_port == 21004


def test_bad_metadata_names_the_key() -> None:
    with pytest.raises(NodeMetadataError, match="NAMESPACE"):
        ProxyNode.from_metadata("x", "x", {"PROXY_MODE": "sidecar"})
    with pytest.raises(NodeMetadataError, match=r"PORTS\[0\]"):
        ProxyNode.from_metadata("x", "x", {"NAMESPACE": "a", "PORTS": [{"name": "p"}]})


def test_target_port_by_name_and_number_selects_inbound_ports() -> None:
    reg = Registry([PRODUCT])
    view = reg.add_node(node("product-v1-0.shop", {"app": "product", "version": "v1"}))
    (http,) = view.endpoints_for(PRODUCT.host, 8080)
    assert (http.address, http.port, http.tls) == ("127.0.0.1", 21002, True)
    assert http.identity == "spiffe://cluster.local/ns/shop/sa/product"
    assert http.labels["version"] == "v1"
    (grpc,) = view.endpoints_for(PRODUCT.host, 9090)
    assert grpc.port == 21004
    assert view.identities_for(PRODUCT.host) == {"spiffe://cluster.local/ns/shop/sa/product"}


def test_selector_and_namespace_must_match() -> None:
    reg = Registry([PRODUCT])
    reg.add_node(node("other-0.shop", {"app": "other"}))
    reg.add_node(node("product-0.elsewhere", {"app": "product"}, ns="elsewhere"))
    reg.add_node(ProxyNode.from_metadata("grpc-client", "c", {"NAMESPACE": "shop"}))
    assert reg.view().endpoints_for(PRODUCT.host, 8080) == ()


def test_listeners_hear_changes_and_versions_grow_only_on_change() -> None:
    reg = Registry([PRODUCT])
    seen: list[RegistryView] = []
    unsubscribe = reg.subscribe(seen.append)
    v0 = reg.view().version
    n = node("product-v1-0.shop", {"app": "product"})
    reg.add_node(n)
    reg.add_node(n)  # same content: no new version, no notification
    assert [v.version for v in seen] == [v0 + 1]
    reg.remove_node(n.id)
    assert seen[-1].endpoints_for(PRODUCT.host, 8080) == ()
    assert len(seen) == 2
    unsubscribe()
    reg.add_node(n)
    assert len(seen) == 2


def test_views_are_immutable_snapshots() -> None:
    reg = Registry([PRODUCT])
    before = reg.view()
    reg.add_node(node("product-v1-0.shop", {"app": "product"}))
    assert before.endpoints_for(PRODUCT.host, 8080) == ()
    with pytest.raises(TypeError):
        before.endpoints[("x", 1)] = ()  # type: ignore[index]


def test_static_service_entry_endpoints_are_plaintext() -> None:
    ep = Endpoint("10.0.0.1", 443, tls=False, source="ServiceEntry/shop/api")
    reg = Registry([], {("api.example.com", 443): [ep]})
    assert reg.view().endpoints_for("api.example.com", 443) == (ep,)
    assert reg.view().identities_for("api.example.com") == frozenset()
