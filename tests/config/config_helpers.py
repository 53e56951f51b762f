"""Shared fixtures for the config tests: a small valid mesh and a way to check a directory."""

from __future__ import annotations

from pathlib import Path

from hyphal.config import ConfigErrors, ResourceSet, load_paths, validate

BASE = {
    "shop/services.yaml": """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: product, namespace: shop}
spec:
  ports: [{name: http, port: 8080, targetPort: web}]
  selector: {app: product}
---
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  ports:
  - {name: http, port: 8080}
  - {name: grpc, port: 9090, protocol: GRPC}
  selector: {app: cart}
""",
    "shop/workloads.yaml": """\
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: product-v1, namespace: shop}
spec:
  labels: {app: product, version: v1}
  serviceAccount: product
  ports: [{name: web, port: 8080}]
  command: [python, -m, product]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: cart, namespace: shop}
spec:
  labels: {app: cart}
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, protocol: GRPC}]
  command: python -m cart
""",
    "shop/product-dr.yaml": """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: product, namespace: shop}
spec:
  host: product
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
""",
    "external.yaml": """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin}
spec:
  hosts: [httpbin.org]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
""",
}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def check_dir(root: Path) -> tuple[ResourceSet | None, list[str]]:
    """Load and validate `root`: the set (None if loading failed) and every error line."""
    try:
        rs = load_paths([root])
    except ConfigErrors as exc:
        return None, [str(e) for e in exc.errors]
    return rs, [str(e) for e in validate(rs)]
