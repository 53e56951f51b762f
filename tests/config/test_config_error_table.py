"""A table of malformed and unsupported resources, each with the exact error a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_helpers import BASE, check_dir, write

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: product, namespace: shop}
spec:
"""
DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec:
"""
AP = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: policy, namespace: shop}
spec:
"""
ROUTE_V1 = "    - destination: {host: product, subset: v1}\n"

CASES: list[tuple[str, str, str, list[str]]] = [
    (
        "weight-over-100",
        "shop/product-vs.yaml",
        "---\n---\n"
        + VS
        + "  hosts: [product]\n  http:\n  - route:\n"
        + ROUTE_V1
        + "      weight: 20\n    - destination: {host: product, subset: v2}\n      weight: 180\n",
        ["shop/product-vs.yaml#2: spec.http[0].route[1].weight: must be 0..100"],
    ),
    (
        "weights-sum",
        "shop/product-vs.yaml",
        VS
        + "  hosts: [product]\n  http:\n  - route:\n"
        + ROUTE_V1
        + "      weight: 70\n    - destination: {host: product, subset: v2}\n      weight: 20\n",
        ["shop/product-vs.yaml#1: spec.http[0].route: weights must sum to 100 (got 90)"],
    ),
    (
        "cors-unsupported",
        "shop/product-vs.yaml",
        VS + "  hosts: [product]\n  http:\n  - corsPolicy: {allowOrigins: [{exact: '*'}]}\n"
        "    route:\n" + ROUTE_V1,
        ["shop/product-vs.yaml#1: spec.http[0].corsPolicy: not supported by hyphal"],
    ),
    (
        "typo-suggests",
        "shop/product-vs.yaml",
        VS
        + "  hosts: [product]\n  http:\n  - route:\n    - destination: {host: product, subsett: v1}\n",
        [
            (
                "shop/product-vs.yaml#1: spec.http[0].route[0].destination.subsett: "
                "not supported by hyphal (did you mean subset?)"
            )
        ],
    ),
    (
        "tls-routes",
        "shop/product-vs.yaml",
        VS
        + "  hosts: [product]\n  tls:\n  - match: [{sniHosts: [product]}]\n    route:\n"
        + ROUTE_V1.replace("    -", "      -"),
        [
            (
                "shop/product-vs.yaml#1: spec.tls: not supported by hyphal "
                "(TLS/SNI routing; route the port with tcp[] instead)"
            )
        ],
    ),
    (
        "unknown-kind",
        "shop/thing.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Frobnicator\nmetadata: {name: x}\nspec: {}\n",
        [
            (
                "shop/thing.yaml#1: kind: 'Frobnicator': unknown kind (supported kinds: Service, "
                "Workload, VirtualService, DestinationRule, ServiceEntry, AuthorizationPolicy, "
                "PeerAuthentication, RequestAuthentication, RateLimitPolicy, HTTPRoute, GRPCRoute)"
            )
        ],
    ),
    (
        "gateway-kind",
        "gw.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec: {}\n",
        [
            (
                "gw.yaml#1: kind: 'Gateway': not supported by hyphal (supported kinds: Service, "
                "Workload, VirtualService, DestinationRule, ServiceEntry, AuthorizationPolicy, "
                "PeerAuthentication, RequestAuthentication, RateLimitPolicy, HTTPRoute, GRPCRoute)"
            )
        ],
    ),
    (
        "bad-api-version",
        "svc.yaml",
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
            "spec: {ports: [{port: 80}], selector: {app: x}}\n"
        ),
        [
            "svc.yaml#1: apiVersion: 'v1' is not supported for Service (supported: hyphal.dev/v1alpha1)"
        ],
    ),
    (
        "audit-action",
        "shop/ap.yaml",
        AP + "  action: AUDIT\n  rules: [{}]\n",
        [
            (
                "shop/ap.yaml#1: spec.action: AUDIT is not supported by hyphal "
                "(supported: ALLOW, DENY)"
            )
        ],
    ),
    (
        "subset-undefined",
        "shop/product-vs.yaml",
        VS
        + "  hosts: [product]\n  http:\n  - route:\n    - destination: {host: product, subset: v3}\n",
        [
            (
                "shop/product-vs.yaml#1: spec.http[0].route[0].destination.subset: subset 'v3' of "
                "product.shop.svc.cluster.local is not defined by any DestinationRule"
            )
        ],
    ),
    (
        "host-not-found",
        "shop/product-vs.yaml",
        VS + "  hosts: [product]\n  http:\n  - route:\n    - destination: {host: reviews}\n",
        [
            (
                "shop/product-vs.yaml#1: spec.http[0].route[0].destination.host: host 'reviews' "
                "(reviews.shop.svc.cluster.local) is not a Service or ServiceEntry host"
            )
        ],
    ),
    (
        "vs-host-not-found",
        "shop/product-vs.yaml",
        VS + "  hosts: [example.com]\n  http:\n  - route:\n    - destination: {host: product}\n",
        [
            (
                "shop/product-vs.yaml#1: spec.hosts[0]: host 'example.com' (example.com.svc.cluster.local) "
                "is not a Service or "
                "ServiceEntry host"
            )
        ],
    ),
    (
        "bad-duration",
        "shop/product-vs.yaml",
        VS + "  hosts: [product]\n  http:\n  - timeout: 5\n    route:\n" + ROUTE_V1,
        [
            (
                "shop/product-vs.yaml#1: spec.http[0].timeout: must be a duration string with a "
                'unit, like "1.5s", "100ms" or "2m" (got 5)'
            )
        ],
    ),
    (
        "bad-duration-unit",
        "shop/cart-dr.yaml",
        DR + "  host: cart\n  trafficPolicy:\n    outlierDetection: {interval: 10 sec}\n",
        [
            (
                "shop/cart-dr.yaml#1: spec.trafficPolicy.outlierDetection.interval: '10 sec' is not "
                'a duration; write a number with a unit (h, m, s, ms, us, ns), like "1.5s", '
                '"100ms" or "2m"'
            )
        ],
    ),
    (
        "regex-lookahead",
        "shop/product-vs.yaml",
        VS + "  hosts: [product]\n  http:\n  - match: [{uri: {regex: '/(?!admin).*'}}]\n"
        "    route:\n" + ROUTE_V1,
        [
            (
                "shop/product-vs.yaml#1: spec.http[0].match[0].uri.regex: '/(?!admin).*' uses a "
                "negative lookahead (?!...), which RE2 (Envoy's regex engine) does not support"
            )
        ],
    ),
    (
        "regex-invalid",
        "shop/product-vs.yaml",
        VS + "  hosts: [product]\n  http:\n  - match: [{headers: {x-user: {regex: '(ab'}}}]\n"
        "    route:\n" + ROUTE_V1,
        [
            (
                "shop/product-vs.yaml#1: spec.http[0].match[0].headers.x-user.regex: '(ab' is not a "
                "valid regex: missing ), unterminated subpattern at position 0"
            )
        ],
    ),
    (
        "bad-yaml",
        "shop/broken.yaml",
        "apiVersion: hyphal.dev/v1alpha1\nkind: Service\nmetadata:\n  name: [a\n",
        [
            (
                "shop/broken.yaml#1: invalid YAML at line 5, column 1: while parsing a flow "
                "sequence, did not find expected ',' or ']'"
            )
        ],
    ),
    (
        "bad-yaml-second-doc",
        "shop/broken.yaml",
        "---\n"
        + BASE["shop/product-dr.yaml"].replace("name: product", "name: other")
        + "---\nkind: Service\n  metadata: x\n",
        [
            (
                "shop/broken.yaml#2: invalid YAML at line 12, column 11: "
                "mapping values are not allowed in this context"
            )
        ],
    ),
    (
        "duplicate-resource",
        "shop/zz-again.yaml",
        BASE["shop/product-dr.yaml"],
        [
            (
                "shop/zz-again.yaml#1: metadata.name: duplicate DestinationRule shop/product: also "
                "defined at shop/product-dr.yaml#1"
            )
        ],
    ),
    (
        "missing-name",
        "shop/product-vs.yaml",
        VS.replace("{name: product, namespace: shop}", "{namespace: shop}")
        + "  hosts: [product]\n  http:\n  - route:\n"
        + ROUTE_V1,
        ["shop/product-vs.yaml#1: metadata.name: required"],
    ),
    (
        "string-match-two-keys",
        "shop/product-vs.yaml",
        VS + "  hosts: [product]\n  http:\n  - match: [{uri: {prefix: /a, exact: /b}}]\n"
        "    route:\n" + ROUTE_V1,
        [
            (
                "shop/product-vs.yaml#1: spec.http[0].match[0].uri: set only one of exact, prefix, "
                "regex (got exact, prefix)"
            )
        ],
    ),
    (
        "bad-port",
        "shop/svc.yaml",
        (
            "apiVersion: hyphal.dev/v1alpha1\nkind: Service\nmetadata: {name: x, namespace: shop}\n"
            "spec: {ports: [{name: http, port: 70000}], selector: {app: x}}\n"
        ),
        ["shop/svc.yaml#1: spec.ports[0].port: must be 1..65535"],
    ),
    (
        "destination-port-missing",
        "shop/cart-vs.yaml",
        VS.replace("product", "cart") + "  hosts: [cart]\n  http:\n  - route:\n"
        "    - destination: {host: cart}\n",
        [
            (
                "shop/cart-vs.yaml#1: spec.http[0].route[0].destination.port: required: "
                "cart.shop.svc.cluster.local has several ports (8080, 9090)"
            )
        ],
    ),
    (
        "destination-port-unknown",
        "shop/product-vs.yaml",
        VS + "  hosts: [product]\n  http:\n  - route:\n"
        "    - destination: {host: product, port: {number: 81}}\n",
        [
            (
                "shop/product-vs.yaml#1: spec.http[0].route[0].destination.port.number: "
                "product.shop.svc.cluster.local has no port 81 (ports: 8080)"
            )
        ],
    ),
    (
        "retry-on-unknown",
        "shop/product-vs.yaml",
        VS + "  hosts: [product]\n  http:\n  - retries: {attempts: 2, retryOn: '5xx,oops'}\n"
        "    route:\n" + ROUTE_V1,
        [
            (
                "shop/product-vs.yaml#1: spec.http[0].retries.retryOn: 'oops' is not a retry "
                "condition (known: 5xx, cancelled, connect-failure, deadline-exceeded, "
                "envoy-ratelimited, gateway-error, internal, refused-stream, reset, "
                "resource-exhausted, retriable-4xx, retriable-headers, retriable-status-codes, "
                "unavailable, or an HTTP status code)"
            )
        ],
    ),
    (
        "fault-percentage",
        "shop/product-vs.yaml",
        VS + "  hosts: [product]\n  http:\n  - fault: {abort: {httpStatus: 503, percentage: "
        "{value: 150}}}\n    route:\n" + ROUTE_V1,
        ["shop/product-vs.yaml#1: spec.http[0].fault.abort.percentage.value: must be 0..100"],
    ),
    (
        "principal-shape",
        "shop/ap.yaml",
        AP
        + "  rules:\n  - from:\n    - source: {principals: ['spiffe://cluster.local/ns/a/sa/b']}\n",
        [
            (
                "shop/ap.yaml#1: spec.rules[0].from[0].source.principals[0]: "
                "'spiffe://cluster.local/ns/a/sa/b' is not a principal: write "
                "<trust-domain>/ns/<namespace>/sa/<service-account> (without spiffe://), or *"
            )
        ],
    ),
    (
        "remote-ip-blocks",
        "shop/ap.yaml",
        AP + "  rules:\n  - from:\n    - source: {remoteIpBlocks: [10.0.0.0/8]}\n",
        [
            (
                "shop/ap.yaml#1: spec.rules[0].from[0].source.remoteIpBlocks: not supported by "
                "hyphal (use ipBlocks)"
            )
        ],
    ),
    (
        "condition-key",
        "shop/ap.yaml",
        AP + "  rules:\n  - when: [{key: source.ip, values: [10.0.0.1]}]\n",
        [
            (
                "shop/ap.yaml#1: spec.rules[0].when[0].key: condition key 'source.ip' is not "
                "supported by hyphal (supported: source.principal, source.namespace, "
                "request.headers[<name>], request.auth.principal, request.auth.audiences, "
                "request.auth.claims[<name>])"
            )
        ],
    ),
    (
        "empty-selector",
        "shop/svc.yaml",
        (
            "apiVersion: hyphal.dev/v1alpha1\nkind: Service\nmetadata: {name: x, namespace: shop}\n"
            "spec: {ports: [{name: http, port: 80}]}\n"
        ),
        [
            (
                "shop/svc.yaml#1: spec.selector: must not be empty: a Service selects its Workloads "
                "by their labels"
            )
        ],
    ),
    (
        "target-port-missing-on-workload",
        "shop/svc.yaml",
        (
            "apiVersion: hyphal.dev/v1alpha1\nkind: Service\nmetadata: {name: p2, namespace: shop}\n"
            "spec: {ports: [{name: http, port: 80, targetPort: admin}], selector: {app: product}}\n"
        ),
        [
            (
                "shop/svc.yaml#1: spec.ports[0].targetPort: selected Workload shop/product-v1 has "
                "no port named 'admin'"
            )
        ],
    ),
    (
        "gateway-not-mesh",
        "shop/product-vs.yaml",
        VS + "  hosts: [product]\n  gateways: [ingress]\n  http:\n  - route:\n" + ROUTE_V1,
        [
            (
                "shop/product-vs.yaml#1: spec.gateways[0]: gateway 'ingress' is not supported by "
                'hyphal: only "mesh" (the sidecars) is'
            )
        ],
    ),
    (
        "lb-unknown",
        "shop/cart-dr.yaml",
        DR + "  host: cart\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n",
        [
            (
                "shop/cart-dr.yaml#1: spec.trafficPolicy.loadBalancer.simple: must be one of "
                "ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH, LEAST_CONN, PEAK_EWMA "
                "(got 'FASTEST')"
            )
        ],
    ),
    (
        "not-a-mapping",
        "shop/list.yaml",
        "- a\n- b\n",
        [("shop/list.yaml#1: a resource must be a mapping with apiVersion, kind, metadata, spec")],
    ),
    (
        "list-item-error",
        "shop/list.yaml",
        (
            "kind: List\napiVersion: v1\nitems:\n- apiVersion: networking.istio.io/v1beta1\n"
            "  kind: DestinationRule\n  metadata: {name: cart, namespace: shop}\n"
            "  spec: {host: cart, subsets: [{name: a}, {name: a}]}\n"
        ),
        ["shop/list.yaml#1: items[0].spec.subsets: subset 'a' is defined twice"],
    ),
    (
        "wrong-type",
        "shop/product-vs.yaml",
        VS + "  hosts: product\n  http:\n  - route:\n" + ROUTE_V1,
        ["shop/product-vs.yaml#1: spec.hosts: must be a list"],
    ),
    (
        "two-errors-collected",
        "shop/two.yaml",
        DR
        + "  host: cart\n  trafficPolicy: {tls: {mode: FANCY}}\n---\n"
        + DR.replace("name: cart", "name: cart2")
        + "  host: cart\n  trafficPolicy: {connectionPool: {http: {maxRetries: -1}}}\n",
        [
            (
                "shop/two.yaml#1: spec.trafficPolicy.tls.mode: must be one of DISABLE, SIMPLE, "
                "MUTUAL, ISTIO_MUTUAL (got 'FANCY')"
            ),
            (
                "shop/two.yaml#2: spec.trafficPolicy.connectionPool.http.maxRetries: must be "
                "0..2147483647"
            ),
        ],
    ),
    (
        "env-value-from",
        "shop/w.yaml",
        (
            "apiVersion: hyphal.dev/v1alpha1\nkind: Workload\nmetadata: {name: w, namespace: shop}\n"
            "spec: {env: [{name: A, valueFrom: {fieldRef: x}}]}\n"
        ),
        [
            (
                "shop/w.yaml#1: spec.env: item [0] must be {name: ..., value: ...} "
                "(valueFrom is not supported)"
            )
        ],
    ),
    (
        "service-entry-tls-protocol",
        "db.yaml",
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db}\n"
            "spec: {hosts: [db.example.com], ports: [{number: 5432, protocol: TLS}]}\n"
        ),
        [
            (
                "db.yaml#1: spec.ports[0].protocol: TLS is not supported by hyphal (supported: HTTP, "
                "HTTP2, GRPC, TCP); use TCP for opaque traffic"
            )
        ],
    ),
    (
        "lb-simple-and-hash",
        "shop/cart-dr.yaml",
        DR + "  host: cart\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n"
        "      consistentHash: {useSourceIp: true}\n",
        [
            (
                "shop/cart-dr.yaml#1: spec.trafficPolicy.loadBalancer: set only one of simple, "
                "consistentHash (got simple, consistentHash)"
            )
        ],
    ),
    (
        "export-to-namespace",
        "shop/cart-dr.yaml",
        DR + "  host: cart\n  exportTo: [.]\n",
        [
            (
                "shop/cart-dr.yaml#1: spec.exportTo: exportTo '.' is not supported by hyphal: every "
                'resource is visible mesh-wide; write ["*"] or leave exportTo out'
            )
        ],
    ),
]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize(("name", "file", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_error(tmp_path: Path, name: str, file: str, text: str, expected: list[str]) -> None:
    write(tmp_path, {**BASE, file: text})
    _, errors = check_dir(tmp_path)
    assert errors == expected


def test_base_mesh_is_valid(tmp_path: Path) -> None:
    rs, errors = check_dir(write(tmp_path, BASE))
    assert errors == []
    assert rs is not None and len(rs) == 6
