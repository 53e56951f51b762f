"""Semantic validation: host resolution and cross-resource checks that pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_helpers import BASE, check_dir, write

from hyphal.config import resolve_host
from hyphal.config.validate import re2_problem


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("product", "product.shop.svc.cluster.local"),
        ("product.shop", "product.shop.svc.cluster.local"),
        ("product.shop.svc", "product.shop.svc.cluster.local"),
        ("product.shop.svc.cluster.local", "product.shop.svc.cluster.local"),
        ("cart.other", "cart.other.svc.cluster.local"),
        ("api.example.com", "api.example.com"),
        ("*.example.com", "*.example.com"),
    ],
)
def test_resolve_host(host: str, expected: str) -> None:
    assert resolve_host(host, "shop") == expected


def test_resolve_host_domain_and_known_hosts() -> None:
    assert resolve_host("product", "shop", domain="mesh.test") == "product.shop.svc.mesh.test"
    assert resolve_host("httpbin.org", "shop", known_hosts={"httpbin.org"}) == "httpbin.org"


GOOD = {
    "shop/routes.yaml": """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
  hosts: [product.shop.svc.cluster.local]
  http:
  - match: [{uri: {regex: "/items/[0-9]+"}}]
    route: [{destination: {host: product.shop, subset: v2}}]
    mirror: {host: httpbin.org}
    mirrorPercentage: {value: 5}
  - route:
    - {destination: {host: product, subset: v1}, weight: 75}
    - {destination: {host: product, subset: v2}, weight: 25}
    retries: {attempts: 2, retryOn: "gateway-error,retriable-status-codes,503"}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  tcp:
  - route: [{destination: {host: cart, port: {number: 9090}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin.org]
  http:
  - route: [{destination: {host: httpbin.org}}]
    timeout: 3s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 1, idleTimeout: 30s}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s,
                       maxEjectionPercent: 50}
    tls: {mode: ISTIO_MUTUAL}
    healthCheck: {path: /healthz, interval: 2s, timeout: 500ms}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: LEAST_REQUEST}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: product, namespace: shop}
spec:
  selector: {matchLabels: {app: product}}
  action: DENY
  rules:
  - from: [{source: {notPrincipals: ["*"], ipBlocks: [10.0.0.0/8]}}]
    when: [{key: source.principal, values: ["cluster.local/ns/shop/*", "*/ns/x/sa/y"]}]
""",
}


def test_a_consistent_mesh_has_no_errors(tmp_path: Path) -> None:
    rs, errors = check_dir(write(tmp_path, {**BASE, **GOOD}))
    assert errors == []
    assert rs is not None and len(rs.virtual_services) == 3


def test_one_virtual_service_per_host(tmp_path: Path) -> None:
    dup = GOOD["shop/routes.yaml"].split("---\n")[0].replace("name: product,", "name: p2,")
    _, errors = check_dir(write(tmp_path, {**BASE, **GOOD, "shop/z.yaml": dup}))
    assert errors == [
        (
            "shop/z.yaml#1: spec.hosts[0]: product.shop.svc.cluster.local is already routed by "
            "VirtualService shop/product (one VirtualService per host)"
        )
    ]


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("^/api/v[12]/.*$", None),
        ("(a)\\1", "a backreference"),
        ("(?<=x)y", "a lookbehind"),
        ("a++", "a possessive quantifier"),
    ],
)
def test_re2_problem(pattern: str, problem: str | None) -> None:
    found = re2_problem(pattern)
    assert (found is None) if problem is None else (found is not None and problem in found)
