"""The Kubernetes registry: Services + EndpointSlices + Pods give local mode's endpoints."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fake_api import FakeApi

from hyphal.config import Service, load_text
from hyphal.control.registry import ProxyNode, Registry
from hyphal.control.translate.inputs import MeshIndex
from hyphal.kube.client import KubeClient
from hyphal.kube.informer import start_informers
from hyphal.kube.registry import (
    KubeRegistry,
    KubeServiceSource,
    port_protocol,
    service_resource,
    slice_endpoints,
)

HOST = "product.shop.svc.cluster.local"


def k8s_service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "product", "namespace": "shop", "uid": "u1"},
            "spec": {"selector": {"app": "product"}, "clusterIP": "10.96.0.10",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                "protocol": "TCP"}]}}


def pod(name: str, ip: str, version: str, sidecar: bool = True) -> dict[str, Any]:
    containers = [{"name": "app", "image": "shop/product"}]
    if sidecar:
        containers.append({"name": "hyphal-proxy", "image": "hyphal"})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop",
                         "labels": {"app": "product", "version": version}},
            "spec": {"serviceAccountName": "product", "containers": containers},
            "status": {"podIP": ip}}


def endpoint_slice(*pods: tuple[str, str, bool]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "product-abc", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "product"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
                           "targetRef": {"kind": "Pod", "namespace": "shop", "name": name}}
                          for name, ip, ready in pods]}


LOCAL = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: product, namespace: shop}
spec:
  selector: {app: product}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: product, namespace: shop}
spec:
  labels: {app: product}
  serviceAccount: product
  ports: [{name: http, port: 8080}]
"""


def local_node(name: str, ip: str, version: str) -> ProxyNode:
    """What the injected sidecar of that pod announces (docs/kubernetes.md)."""
    return ProxyNode.from_metadata(f"{name}.shop", "product", {
        "NAMESPACE": "shop", "SERVICE_ACCOUNT": "product", "PROXY_MODE": "sidecar",
        "LABELS": {"app": "product", "version": version}, "INSTANCE_IP": ip,
        "PORTS": [{"name": "http", "port": 8080, "protocol": "HTTP", "app_port": 8080,
                   "inbound_port": 8080}],
    })


def test_service_becomes_the_hyphal_service_local_mode_would_load() -> None:
    model = service_resource(k8s_service())
    local, _workload = load_text(LOCAL, "local.yaml")
    assert isinstance(model, Service) and isinstance(local, Service)
    assert model.spec == local.spec and model.metadata == local.metadata


def test_endpoints_equal_local_mode() -> None:
    model = service_resource(k8s_service())
    assert model is not None
    pods = {("shop", p["metadata"]["name"]): p
            for p in (pod("product-1", "10.0.0.5", "v1"), pod("product-2", "10.0.0.6", "v2"))}
    kube = slice_endpoints([model], [endpoint_slice(("product-1", "10.0.0.5", True),
                                                    ("product-2", "10.0.0.6", True),
                                                    ("product-3", "10.0.0.7", False))], pods)
    records, static = MeshIndex.build(load_text(LOCAL, "local.yaml")).registry_inputs()
    local = Registry(records, static)
    local.add_node(local_node("product-1", "10.0.0.5", "v1"))
    local.add_node(local_node("product-2", "10.0.0.6", "v2"))
    assert {k: tuple(v) for k, v in kube.items()} == dict(local.view().endpoints)
    [a, b] = kube[(HOST, 80)]
    assert (a.address, a.port, a.tls) == ("10.0.0.5", 8080, True)
    assert a.identity == "spiffe://cluster.local/ns/shop/sa/product"
    assert b.labels["version"] == "v2"


def test_pod_without_sidecar_is_plaintext_and_unnamed() -> None:
    model = service_resource(k8s_service())
    assert model is not None
    pods = {("shop", "p"): pod("p", "10.0.0.9", "v1", sidecar=False)}
    [ep] = slice_endpoints([model], [endpoint_slice(("p", "10.0.0.9", True))], pods)[(HOST, 80)]
    assert (ep.tls, ep.identity) == (False, "")


def test_services_the_mesh_does_not_serve() -> None:
    no_selector = k8s_service()
    del no_selector["spec"]["selector"]
    assert service_resource(no_selector) is None
    system = k8s_service()
    system["metadata"]["namespace"] = "kube-system"
    assert service_resource(system) is None
    assert port_protocol({"name": "grpc-api"}) == "GRPC"
    assert port_protocol({"name": "x", "appProtocol": "kubernetes.io/h2c"}) == "HTTP2"
    assert port_protocol({"name": "tcp-db"}) == "TCP"


def test_kube_registry_replaces_sidecar_endpoints_for_kube_hosts() -> None:
    reg = KubeRegistry()
    records, static = MeshIndex.build(load_text(LOCAL, "local.yaml")).registry_inputs()
    reg.set_services(records, static)
    reg.add_node(local_node("product-1", "10.0.0.5", "v1"))
    model = service_resource(k8s_service())
    assert model is not None
    pods = {("shop", "product-1"): pod("product-1", "10.0.0.5", "v1")}
    eps = slice_endpoints([model], [endpoint_slice(("product-1", "10.0.0.5", True))], pods)
    reg.set_kube({HOST}, eps)
    assert len(reg.view().endpoints_for(HOST, 80)) == 1  # not doubled by the connected node
    reg.set_kube({HOST}, {})
    assert reg.view().endpoints_for(HOST, 80) == ()


async def test_source_follows_the_api(api: FakeApi, client: KubeClient) -> None:
    api.put(k8s_service())
    api.put(pod("product-1", "10.0.0.5", "v1"))
    api.put(endpoint_slice(("product-1", "10.0.0.5", True)))
    seen: list[tuple[Service, ...]] = []
    reg = KubeRegistry()
    src = KubeServiceSource(client, reg, seen.append)
    tasks = await start_informers(src.informers, timeout=5)
    try:
        assert [s.name for s in seen[-1]] == ["product"]
        assert [e.address for e in reg.view().endpoints_for(HOST, 80)] == ["10.0.0.5"]
        api.put(pod("product-2", "10.0.0.6", "v2"))
        api.put(endpoint_slice(("product-1", "10.0.0.5", True), ("product-2", "10.0.0.6", True)))
        for _ in range(250):
            if len(reg.view().endpoints_for(HOST, 80)) == 2:
                break
            await asyncio.sleep(0.02)
        [_, second] = reg.view().endpoints_for(HOST, 80)
        assert second.labels["version"] == "v2"
        assert len(seen) == 1, "endpoint changes do not re-announce the Services"
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
