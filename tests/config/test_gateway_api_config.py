"""Gateway API HTTPRoute/GRPCRoute (GAMMA): what loads, and the exact error for what does not."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_helpers import BASE, check_dir, write

from hyphal.config import load_text, to_yaml
from hyphal.config.models import GatewayGRPCRoute, GatewayHTTPRoute

HEAD = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: product, namespace: shop}
spec:
"""
PARENT = "  parentRefs: [{group: '', kind: Service, name: product}]\n"
GRPC_HEAD = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: cart, namespace: shop}
spec:
  parentRefs: [{group: hyphal.dev, kind: Service, name: cart, port: 9090}]
"""
BACKEND = "    backendRefs: [{name: product, port: 8080}]\n"
RULE = "  rules:\n  - backendRefs: [{name: product, port: 8080}]\n"
F = "shop/route.yaml#1"

CASES: list[tuple[str, str, list[str]]] = [
    (
        "hostnames",
        HEAD + PARENT + "  hostnames: [product.example]\n  rules:\n  - backendRefs: "
        "[{name: product, port: 8080}]\n",
        [
            f"{F}: spec.hostnames: not supported for mesh routes (GAMMA): a route attached to a "
            "Service applies to every name of that Service; remove hostnames"
        ],
    ),
    (
        "gateway-parent",
        HEAD + "  parentRefs: [{name: edge}]\n" + RULE,
        [
            f"{F}: spec.parentRefs[0].group: required for a Service parent (the spec's default "
            'group is gateway.networking.k8s.io); write group: "" (core) or hyphal.dev',
            f"{F}: spec.parentRefs[0].kind: required: the spec's default parent is a Gateway, "
            'which hyphal does not implement; write kind: Service (and group: "")',
        ],
    ),
    (
        "parent-kind-gateway",
        HEAD
        + "  parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]\n"
        + RULE,
        [
            f"{F}: spec.parentRefs[0].group: group 'gateway.networking.k8s.io' is not "
            'supported: hyphal routes to Services; write group: "" (core) or hyphal.dev',
            f"{F}: spec.parentRefs[0].kind: parent kind 'Gateway' is not supported: hyphal "
            "implements the Gateway API for the mesh only (GAMMA); attach the route to a "
            "Service (kind: Service)",
        ],
    ),
    (
        "no-such-backend",
        HEAD + PARENT + "  rules:\n  - backendRefs:\n    - {name: product, port: 8080}\n"
        "    - {name: x, port: 8080}\n",
        [f'{F}: spec.rules[0].backendRefs[1].name: no Service "x" in namespace "shop"'],
    ),
    (
        "no-such-parent",
        HEAD + "  parentRefs: [{group: '', kind: Service, name: ghost}]\n" + RULE,
        [f'{F}: spec.parentRefs[0].name: no Service "ghost" in namespace "shop"'],
    ),
    (
        "backend-port-missing",
        HEAD + PARENT + "  rules:\n  - backendRefs: [{name: product}]\n",
        [f"{F}: spec.rules[0].backendRefs[0].port: required"],
    ),
    (
        "backend-wrong-port",
        HEAD + PARENT + "  rules:\n  - backendRefs: [{name: product, port: 9999}]\n",
        [
            f'{F}: spec.rules[0].backendRefs[0].port: Service "product" in namespace "shop" '
            "has no port 9999 (ports: 8080)"
        ],
    ),
    (
        "cross-namespace-backend",
        HEAD + PARENT + "  rules:\n  - backendRefs: [{name: product, namespace: other, "
        "port: 8080}]\n",
        [
            f'{F}: spec.rules[0].backendRefs[0].namespace: a reference to namespace "other" '
            "needs a ReferenceGrant, which hyphal does not support: refer to a Service in "
            'namespace "shop"'
        ],
    ),
    (
        "consumer-route",
        HEAD
        + "  parentRefs: [{group: '', kind: Service, name: product, namespace: other}]\n"
        + RULE,
        [
            f'{F}: spec.parentRefs[0].namespace: attaching to a Service in namespace "other" '
            'from namespace "shop" (a consumer route) is not supported by hyphal: put the route '
            'in namespace "other"'
        ],
    ),
    (
        "parent-port",
        HEAD + "  parentRefs: [{group: '', kind: Service, name: product, port: 81}]\n" + RULE,
        [f'{F}: spec.parentRefs[0].port: Service "product" has no port 81'],
    ),
    (
        "extension-ref",
        HEAD + PARENT + "  rules:\n  - filters: [{type: ExtensionRef, extensionRef: "
        "{group: x.io, kind: Auth, name: a}}]\n" + BACKEND,
        [
            f"{F}: spec.rules[0].filters[0].type: ExtensionRef is not supported by hyphal "
            "(supported: RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, "
            "RequestRedirect, URLRewrite); hyphal has no filter extensions; use the built-in "
            "filter types"
        ],
    ),
    (
        "session-persistence",
        HEAD + PARENT + "  rules:\n  - sessionPersistence: {sessionName: s}\n" + BACKEND,
        [
            f"{F}: spec.rules[0].sessionPersistence: not supported by hyphal for mesh routes "
            "(GAMMA); for sticky sessions use a DestinationRule with consistentHash on the "
            "backend Service"
        ],
    ),
    (
        "filter-union",
        HEAD + PARENT + "  rules:\n  - filters: [{type: RequestHeaderModifier, "
        "responseHeaderModifier: {remove: [a]}}]\n" + BACKEND,
        [
            f"{F}: spec.rules[0].filters[0]: requestHeaderModifier is required when type is "
            "RequestHeaderModifier"
        ],
    ),
    (
        "redirect-with-backends",
        HEAD + PARENT + "  rules:\n  - filters: [{type: RequestRedirect, requestRedirect: "
        "{hostname: a.example}}]\n" + BACKEND,
        [f"{F}: spec.rules[0]: RequestRedirect filter must not be used together with backendRefs"],
    ),
    (
        "replace-prefix-needs-prefix",
        HEAD + PARENT + "  rules:\n  - matches: [{path: {type: Exact, value: /a}}]\n"
        "    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, "
        "replacePrefixMatch: /b}}}]\n" + BACKEND,
        [
            f"{F}: spec.rules[0]: when using URLRewrite with path.replacePrefixMatch, exactly "
            "one PathPrefix match must be specified"
        ],
    ),
    (
        "all-zero-weights",
        HEAD + PARENT + "  rules:\n  - backendRefs: [{name: product, port: 8080, weight: 0}]\n",
        [
            f"{F}: spec.rules[0]: every backendRef has weight 0: give at least one a weight "
            "above 0 (weights are relative, like 90 and 10)"
        ],
    ),
    (
        "timeouts-order",
        HEAD + PARENT + "  rules:\n  - timeouts: {request: 1s, backendRequest: 2s}\n" + BACKEND,
        [
            f"{F}: spec.rules[0].timeouts: backendRequest timeout cannot be longer than "
            "request timeout"
        ],
    ),
    (
        "retry-code",
        HEAD + PARENT + "  rules:\n  - retry: {codes: [302]}\n" + BACKEND,
        [f"{F}: spec.rules[0].retry.codes[0]: must be 400..599"],
    ),
    (
        "bad-path-and-method",
        HEAD + PARENT + "  rules:\n  - matches: [{path: {value: api}, method: FETCH}]\n" + BACKEND,
        [
            f"{F}: spec.rules[0].matches[0].path: value 'api' must be an absolute path "
            "starting with '/'",
            f"{F}: spec.rules[0].matches[0].method: must be one of GET, HEAD, POST, PUT, "
            "DELETE, CONNECT, OPTIONS, TRACE, PATCH (got 'FETCH')",
        ],
    ),
    (
        "re2",
        HEAD + PARENT + "  rules:\n  - matches: [{headers: [{name: x, type: RegularExpression, "
        "value: '(?=a)b'}]}]\n" + BACKEND,
        [
            f"{F}: spec.rules[0].matches[0].headers[0].value: '(?=a)b' uses a lookahead "
            "(?=...), which RE2 (Envoy's regex engine) does not support"
        ],
    ),
    (
        "virtual-service-on-same-host",
        HEAD + PARENT + RULE + "---\n"
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: product, namespace: shop}\n"
        "spec:\n  hosts: [product]\n  http: [{route: [{destination: {host: product}}]}]\n",
        [
            f"{F}: spec.parentRefs[0]: product.shop.svc.cluster.local is already routed by "
            "VirtualService shop/product (one source of truth per host: use a VirtualService "
            "or Gateway API routes)"
        ],
    ),
    (
        "grpc-method",
        GRPC_HEAD + "  rules:\n  - matches: [{method: {type: Exact}}]\n"
        "    backendRefs: [{name: cart, port: 9090}]\n",
        [
            "shop/route.yaml#1: spec.rules[0].matches[0].method: one or both of service or "
            "method must be specified"
        ],
    ),
    (
        "grpc-and-http-on-one-service",
        GRPC_HEAD
        + "  rules:\n  - backendRefs: [{name: cart, port: 9090}]\n---\n"
        + HEAD.replace("name: product", "name: cart-http")
        + "  parentRefs: [{group: '', kind: Service, name: cart, port: 8080}]\n"
        "  rules:\n  - backendRefs: [{name: cart, port: 8080}]\n",
        [
            "shop/route.yaml#1: spec.parentRefs[0]: cart.shop.svc.cluster.local already has "
            "HTTPRoute shop/cart-http; GRPCRoutes and HTTPRoutes are not merged (use one kind "
            "per Service)"
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_route_errors(tmp_path: Path, text: str, expected: list[str]) -> None:
    _, errors = check_dir(write(tmp_path, {**BASE, "shop/route.yaml": text}))
    assert errors == expected


def test_a_full_route_loads_validates_and_round_trips(tmp_path: Path) -> None:
    text = (
        HEAD
        + PARENT
        + """\
  rules:
  - name: canary
    matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-canary, value: "yes"}]
      queryParams: [{name: q, type: RegularExpression, value: "a.*"}]
      method: GET
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-a, value: "1"}], remove: [x-b]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: product, port: 8080}, percent: 5}
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs:
    - {name: product, port: 8080, weight: 9}
    - {group: hyphal.dev, kind: Service, name: product, port: 8080, weight: 1}
    timeouts: {request: 2s, backendRequest: 500ms}
    retry: {codes: [503], attempts: 3, backoff: 100ms}
"""
    )
    rs, errors = check_dir(write(tmp_path, {**BASE, "shop/route.yaml": text}))
    assert errors == []
    assert rs is not None
    (route,) = rs.http_routes
    assert isinstance(route, GatewayHTTPRoute)
    rule = route.spec.rules[0]
    assert [b.weight for b in rule.backend_refs] == [9, 1]
    assert rule.matches[0].method == "GET"
    assert rule.retry is not None and rule.retry.backoff is not None
    assert rule.retry.backoff.total_seconds() == 0.1
    assert rule.filters[1].request_mirror is not None
    assert rule.filters[1].request_mirror.mirror_percent == 5.0
    (again,) = load_text(to_yaml(route), "again.yaml")
    assert again.spec == route.spec and to_yaml(again) == to_yaml(route)


def test_defaults_follow_the_spec() -> None:
    (route,) = load_text(
        HEAD + PARENT + "  rules:\n  - matches: [{}]\n" + BACKEND,
        "r.yaml",
    )
    assert isinstance(route, GatewayHTTPRoute)
    rule = route.spec.rules[0]
    path = rule.matches[0].effective_path
    assert (path.type, path.value) == ("PathPrefix", "/")
    b = rule.backend_refs[0]
    assert (b.group, b.kind, b.weight) == ("", "Service", 1)
    (g,) = load_text(
        GRPC_HEAD + "  rules:\n  - matches: [{method: {service: shop.Cart}}]\n"
        "    backendRefs: [{name: cart, port: 9090}]\n",
        "g.yaml",
    )
    assert isinstance(g, GatewayGRPCRoute)
    m = g.spec.rules[0].matches[0].method
    assert m is not None and (m.type, m.service, m.method) == ("Exact", "shop.Cart", None)
