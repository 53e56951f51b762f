"""Helpers for the translation tests: load YAML meshes, make nodes, find resources."""

from __future__ import annotations

from typing import Any

from hyphal.config import ResourceSet
from hyphal.config.loader import load_text
from hyphal.control.registry import ProxyNode, Registry, RegistryView
from hyphal.control.translate import naming
from hyphal.control.translate.inputs import MeshIndex
from hyphal.control.translate.snapshot import translate

CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"

SHOP = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: frontend, namespace: shop}
spec:
  selector: {app: frontend}
  ports: [{name: http, port: 8080}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: product, namespace: shop}
spec:
  selector: {app: product}
  ports: [{name: http, port: 8080, targetPort: web}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: product-v1, namespace: shop}
spec:
  labels: {app: product, version: v1}
  serviceAccount: product
  ports: [{name: web, port: 9080}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: frontend, namespace: shop}
spec:
  labels: {app: frontend}
  serviceAccount: frontend
  ports: [{name: http, port: 8080}]
"""


def load(*texts: str) -> ResourceSet:
    out: list[Any] = []
    for i, t in enumerate(texts):
        out += load_text(t, f"test{i}.yaml")
    return ResourceSet(out)


def sidecar(
    name: str,
    ns: str,
    labels: dict[str, str],
    sa: str,
    *,
    base: int = 20000,
    ports: list[dict[str, Any]] | None = None,
    upstream: dict[str, int] | None = None,
) -> ProxyNode:
    return ProxyNode.from_metadata(
        f"{name}-0.{ns}",
        name,
        {
            "NAMESPACE": ns,
            "SERVICE_ACCOUNT": sa,
            "WORKLOAD_NAME": name,
            "LABELS": labels,
            "INSTANCE_IP": "127.0.0.1",
            "PROXY_MODE": "sidecar",
            "OUTBOUND_HTTP_PORT": base,
            "PORTS": ports
            if ports is not None
            else [
                {
                    "name": "http",
                    "port": 8080,
                    "protocol": "HTTP",
                    "app_port": base + 1,
                    "inbound_port": base + 2,
                }
            ],
            "UPSTREAM_PORTS": upstream or {},
        },
    )


def proxyless(ns: str = "shop") -> ProxyNode:
    return ProxyNode.from_metadata("client-1", "client", {"NAMESPACE": ns})


def registry_for(rs: ResourceSet, *nodes: ProxyNode) -> RegistryView:
    records, static = MeshIndex.build(rs).registry_inputs()
    reg = Registry(records, static)
    for n in nodes:
        reg.add_node(n)
    return reg.view()


def run(rs: ResourceSet, node: ProxyNode, *nodes: ProxyNode) -> dict[str, dict[str, Any]]:
    return translate(rs, registry_for(rs, *nodes), node, CA, "cluster.local")


def routes_of(
    out: dict[str, dict[str, Any]], vhost: str, rc: str = naming.OUTBOUND_HTTP
) -> list[Any]:
    config = out[naming.ROUTE_TYPE][rc]
    for vh in config.virtual_hosts:
        if vh.name == vhost:
            return list(vh.routes)
    raise AssertionError(f"no virtual host {vhost} in {[v.name for v in config.virtual_hosts]}")


def unpack(any_msg: Any, cls: Any) -> Any:
    m = cls()
    assert any_msg.Unpack(m), f"not a {cls.DESCRIPTOR.full_name}: {any_msg.type_url}"
    return m
