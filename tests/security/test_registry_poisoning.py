"""Registry poisoning: a sidecar becomes a Service's endpoint only with that Service's identity."""

from __future__ import annotations

from typing import Any

from hyphal.config import ResourceSet
from hyphal.config.loader import load_text
from hyphal.control.registry import ProxyNode, Registry
from hyphal.control.translate.inputs import MeshIndex
from hyphal.control.translate.source import MeshSnapshotSource
from hyphal.control.xds.snapshot import NodeInfo

PAYMENT = "payment.shop.svc.cluster.local"
MESH = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: payment, namespace: shop}
spec:
  selector: {app: payment}
  ports: [{name: http, port: 8080}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: payment, namespace: shop}
spec:
  labels: {app: payment}
  serviceAccount: payment
  ports: [{name: http, port: 8080}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: frontend, namespace: shop}
spec:
  labels: {app: frontend}
  serviceAccount: frontend
  ports: [{name: http, port: 8080}]
"""


def _metadata(sa: str, labels: dict[str, str], inbound: int) -> dict[str, Any]:
    return {
        "NAMESPACE": "shop", "SERVICE_ACCOUNT": sa, "WORKLOAD_NAME": sa, "LABELS": labels,
        "INSTANCE_IP": "127.0.0.1", "PROXY_MODE": "sidecar", "OUTBOUND_HTTP_PORT": 21000.0,
        "PORTS": [{"name": "http", "port": 8080.0, "protocol": "HTTP",
                   "app_port": 21001.0, "inbound_port": float(inbound)}],
    }  # fmt: skip


def _registry() -> Registry:
    records, static = MeshIndex.build(ResourceSet(load_text(MESH, "mesh.yaml"))).registry_inputs()
    return Registry(records, static)


def test_a_sidecar_claiming_another_services_labels_is_not_its_endpoint() -> None:
    reg = _registry()
    # frontend's sidecar (a valid frontend certificate) claims payment's labels
    evil = ProxyNode.from_metadata("evil-0.shop", "frontend",
                                   _metadata("frontend", {"app": "payment"}, 23002))
    view = reg.add_node(evil)
    assert view.endpoints_for(PAYMENT, 8080) == ()
    assert "spiffe://cluster.local/ns/shop/sa/frontend" not in view.identities_for(PAYMENT)


def test_the_services_own_identity_is_still_its_endpoint() -> None:
    reg = _registry()
    good = ProxyNode.from_metadata("payment-0.shop", "payment",
                                   _metadata("payment", {"app": "payment"}, 23012))
    [ep] = reg.add_node(good).endpoints_for(PAYMENT, 8080)
    assert ep.port == 23012 and ep.identity == "spiffe://cluster.local/ns/shop/sa/payment"


def test_a_plaintext_ads_node_never_becomes_an_endpoint() -> None:
    """The loopback plaintext port proves nothing: a node there claiming to be payment's
    sidecar must not be routed to (it would black-hole or, with a widened SAN list, intercept)."""
    src = MeshSnapshotSource(ResourceSet(load_text(MESH, "mesh.yaml")), ca_bundle=b"")
    md = _metadata("payment", {"app": "payment"}, 23022)
    plain = NodeInfo(id="payment-9.shop", cluster="payment", metadata=md, namespace="shop",
                     service_account="payment", proxy_mode="sidecar", peer_identity=None)
    src.node_connected(plain)
    assert src.registry.view().endpoints_for(PAYMENT, 8080) == ()
    proven = NodeInfo(id="payment-0.shop", cluster="payment", metadata=md, namespace="shop",
                      service_account="payment", proxy_mode="sidecar",
                      peer_identity="spiffe://cluster.local/ns/shop/sa/payment")
    src.node_connected(proven)
    assert len(src.registry.view().endpoints_for(PAYMENT, 8080)) == 1


def test_a_plaintext_node_reusing_a_sidecars_id_cannot_displace_it() -> None:
    """A plaintext client claiming a connected sidecar's node id, connecting and leaving,
    must not take the sidecar's endpoints with it."""
    src = MeshSnapshotSource(ResourceSet(load_text(MESH, "mesh.yaml")), ca_bundle=b"")
    md = _metadata("payment", {"app": "payment"}, 23032)
    proven = NodeInfo(id="payment-0.shop", cluster="payment", metadata=md, namespace="shop",
                      service_account="payment", proxy_mode="sidecar",
                      peer_identity="spiffe://cluster.local/ns/shop/sa/payment")
    impostor = NodeInfo(id="payment-0.shop", cluster="payment", metadata=md, namespace="shop",
                        service_account="payment", proxy_mode="sidecar", peer_identity=None)
    src.node_connected(proven)
    src.node_connected(impostor)
    assert len(src.registry.view().endpoints_for(PAYMENT, 8080)) == 1
    src.node_disconnected(impostor)
    assert len(src.registry.view().endpoints_for(PAYMENT, 8080)) == 1
