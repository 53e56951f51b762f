"""GAMMA HTTPRoute/GRPCRoute attached to a Service -> the Envoy routes a VirtualService makes."""

from __future__ import annotations

from translate_helpers import load, proxyless, routes_of, run, sidecar

from hyphal.control.translate import naming
from hyphal.control.translate.consistency import check_consistency
from hyphal.control.translate.pb import percent_pb2

NS = "shop"
API = "api.shop.svc.cluster.local"
V1 = f"outbound|8080||api-v1.{NS}.svc.cluster.local"
V2 = f"outbound|8080||api-v2.{NS}.svc.cluster.local"
WHOLE = f"outbound|8080||{API}"
VH = f"{API}:8080"
CLIENT = sidecar("client", NS, {"app": "client"}, "client", base=22000)

MESH = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, protocol: GRPC}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: api-v1, namespace: shop}
spec:
  selector: {app: api, version: v1}
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, protocol: GRPC}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: api-v2, namespace: shop}
spec:
  selector: {app: api, version: v2}
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, protocol: GRPC}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: api-v1, namespace: shop}
spec:
  labels: {app: api, version: v1}
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, protocol: GRPC}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: api-v2, namespace: shop}
spec:
  labels: {app: api, version: v2}
  ports: [{name: http, port: 8080}, {name: grpc, port: 9090, protocol: GRPC}]
"""


PARENT = "{group: '', kind: Service, name: api}"


def route(rules: str, name: str = "api", parent: str = PARENT) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{parent}]
  rules:
{rules}"""


def test_weights_are_relative_and_header_match_goes_first() -> None:
    text = route("""\
  - backendRefs:
    - {name: api-v1, port: 8080, weight: 90}
    - {name: api-v2, port: 8080, weight: 10}
  - matches: [{headers: [{name: X-Canary, value: "yes"}]}]
    backendRefs: [{name: api-v2, port: 8080}]
""")
    out = run(load(MESH, text), CLIENT)
    canary, split = routes_of(out, VH)
    assert canary.name == "HTTPRoute/shop/api.rules[1].matches[0]"
    assert canary.match.prefix == "/"
    (h,) = canary.match.headers
    assert (h.name, h.string_match.exact) == ("x-canary", "yes")
    assert canary.route.cluster == V2
    assert split.name == "HTTPRoute/shop/api.rules[0]" and split.match.prefix == "/"
    assert [(c.name, c.weight.value) for c in split.route.weighted_clusters.clusters] == [
        (V1, 90),
        (V2, 10),
    ]
    # The mesh default, as for a VirtualService without retries/timeout.
    assert split.route.timeout.seconds == 0
    assert split.route.retry_policy.num_retries.value == 2
    assert check_consistency(out) == []


def test_precedence_exact_regex_prefix_method_headers_query() -> None:
    text = route("""\
  - matches:
    - path: {type: PathPrefix, value: /a}
    - path: {type: PathPrefix, value: /a/b/}
    - path: {type: Exact, value: /a}
    - path: {type: RegularExpression, value: "/r/[0-9]+"}
    - {path: {value: /a}, method: POST}
    - {path: {value: /a}, headers: [{name: h1, value: x}, {name: h2, value: y}]}
    - {path: {value: /a}, headers: [{name: h1, value: x}]}
    - {path: {value: /a}, queryParams: [{name: q, type: RegularExpression, value: "z.*"}]}
    backendRefs: [{name: api-v1, port: 8080}]
""")
    out = run(load(MESH, text), CLIENT)
    got = []
    for r in routes_of(out, VH):
        kind = r.match.WhichOneof("path_specifier")
        got.append((kind, getattr(r.match, kind), r.name.rsplit(".", 1)[1]))
    regex = ("safe_regex", got[1][1], "matches[3]")
    assert got == [
        ("path", "/a", "matches[2]"),
        regex,
        # /a/b/ is the longest prefix (trailing slash ignored): /a/b exactly, or under /a/b/
        ("path", "/a/b", "matches[1]"),
        ("prefix", "/a/b/", "matches[1]"),
        ("path", "/a", "matches[4]"),  # method
        ("prefix", "/a/", "matches[4]"),
        ("path", "/a", "matches[5]"),  # two headers
        ("prefix", "/a/", "matches[5]"),
        ("path", "/a", "matches[6]"),  # one header
        ("prefix", "/a/", "matches[6]"),
        ("path", "/a", "matches[7]"),  # a query param
        ("prefix", "/a/", "matches[7]"),
        ("path", "/a", "matches[0]"),
        ("prefix", "/a/", "matches[0]"),
    ]
    rs = routes_of(out, VH)
    assert rs[1].match.safe_regex.regex == "/r/[0-9]+"
    assert [(h.name, h.string_match.exact) for h in rs[4].match.headers] == [(":method", "POST")]
    assert rs[10].match.query_parameters[0].string_match.safe_regex.regex == "z.*"


def test_routes_merge_across_httproutes_by_name_and_rule_order() -> None:
    a = route("  - backendRefs: [{name: api-v1, port: 8080}]\n", name="b-route")
    b = route(
        "  - matches: [{path: {value: /x}}]\n    backendRefs: [{name: api-v2, port: 8080}]\n"
        "  - backendRefs: [{name: api-v2, port: 8080}]\n",
        name="a-route",
    )
    out = run(load(MESH, a, b), CLIENT)
    names = [r.name for r in routes_of(out, VH)]
    assert names == [
        "HTTPRoute/shop/a-route.rules[0].matches[0]",
        "HTTPRoute/shop/a-route.rules[0].matches[0]",
        "HTTPRoute/shop/a-route.rules[1]",  # a tie on "/": a-route before b-route
        "HTTPRoute/shop/b-route.rules[0]",
    ]


def test_filters_timeouts_retry() -> None:
    text = route("""\
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-A, value: "1"}]
        add: [{name: x-b, value: "2"}]
        remove: [x-c]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {remove: [server]}
    - type: URLRewrite
      urlRewrite:
        hostname: api.internal
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
    - type: RequestMirror
      requestMirror:
        backendRef: {name: api-v2, port: 8080}
        fraction: {numerator: 1, denominator: 8}
    backendRefs:
    - name: api-v1
      port: 8080
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-backend, value: v1}]}
    timeouts: {request: 2s, backendRequest: 500ms}
    retry: {codes: [502, 503], attempts: 3, backoff: 100ms}
  - matches: [{path: {type: Exact, value: /whole}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /other}}
    backendRefs: [{name: api-v1, port: 8080}]
    retry: {attempts: 0}
    timeouts: {backendRequest: 1s}
""")
    out = run(load(MESH, text), CLIENT)
    whole, exact_old, under_old = routes_of(out, VH)  # exact paths first
    assert exact_old.match.path == "/old" and under_old.match.prefix == "/old/"
    # ReplacePrefixMatch: /old -> /new, /old/x -> /new/x
    assert exact_old.route.regex_rewrite.pattern.regex == "^/old$"
    assert exact_old.route.regex_rewrite.substitution == "/new"
    assert under_old.route.prefix_rewrite == "/new/"
    for r in (exact_old, under_old):
        a = r.route
        assert a.host_rewrite_literal == "api.internal"
        (cw,) = a.weighted_clusters.clusters  # a per-backend header filter needs the list form
        assert cw.name == V1 and cw.weight.value == 1
        assert [h.header.key for h in cw.request_headers_to_add] == ["x-backend"]
        assert {h.header.key for h in r.request_headers_to_add} == {"x-a", "x-b"}
        assert list(r.request_headers_to_remove) == ["x-c"]
        assert list(r.response_headers_to_remove) == ["server"]
        assert (a.timeout.seconds, a.timeout.nanos) == (2, 0)
        rp = a.retry_policy
        assert rp.num_retries.value == 3
        assert rp.retry_on == "connect-failure,refused-stream,reset,retriable-status-codes"
        assert list(rp.retriable_status_codes) == [502, 503]
        assert rp.per_try_timeout.nanos == 500_000_000
        assert rp.retry_back_off.base_interval.nanos == 100_000_000
        (mp,) = a.request_mirror_policies
        assert mp.cluster == V2
        frac = mp.runtime_fraction.default_value
        million = percent_pb2.FractionalPercent.MILLION
        assert (frac.numerator, frac.denominator) == (125_000, million)
    assert whole.match.path == "/whole"
    assert whole.route.regex_rewrite.pattern.regex == "^/.*$"
    assert whole.route.regex_rewrite.substitution == "/other"
    assert whole.route.retry_policy.num_retries.value == 0
    assert whole.route.retry_policy.per_try_timeout.seconds == 1
    assert check_consistency(out) == []


def test_redirect() -> None:
    text = route("""\
  - matches: [{path: {value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.example, port: 8443, statusCode: 301,
                        path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
""")
    out = run(load(MESH, text), CLIENT)
    exact, under = routes_of(out, VH)
    for r in (exact, under):
        rd = r.redirect
        assert (rd.scheme_redirect, rd.host_redirect, rd.port_redirect) == (
            "https",
            "new.example",
            8443,
        )
        assert rd.response_code == rd.MOVED_PERMANENTLY
    assert exact.redirect.path_redirect == "/"
    assert under.redirect.prefix_rewrite == "/"


def test_parent_port_limits_the_route_and_other_ports_keep_the_default() -> None:
    text = route(
        "  - backendRefs: [{name: api-v1, port: 8080}]\n",
        parent="{group: '', kind: Service, name: api, port: 8080}",
    )
    out = run(load(MESH, text), CLIENT)
    (r,) = routes_of(out, VH)
    assert r.route.cluster == V1
    (d,) = routes_of(out, f"{API}:9090")
    assert d.name == "default" and d.route.cluster == f"outbound|9090||{API}"
    # The backends' own virtual hosts are untouched.
    (b,) = routes_of(out, "api-v2.shop.svc.cluster.local:8080")
    assert b.name == "default" and b.route.cluster == V2


def test_grpcroute_method_matches_and_weights_for_a_proxyless_client() -> None:
    text = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: api-grpc, namespace: shop}
spec:
  parentRefs: [{group: hyphal.dev, kind: Service, name: api, port: 9090}]
  rules:
  - matches: [{method: {service: shop.Api}}]
    backendRefs:
    - {name: api-v1, port: 9090, weight: 3}
    - {name: api-v2, port: 9090, weight: 1}
  - matches:
    - method: {service: shop.Api, method: Get}
      headers: [{name: x-user, type: RegularExpression, value: "ada.*"}]
    - method: {method: Get}
    - method: {type: RegularExpression, service: "shop\\\\..*"}
    backendRefs: [{name: api-v2, port: 9090}]
"""
    out = run(load(MESH, text), proxyless(NS))
    rc = naming.proxyless_route_name(API, 9090)
    rs = routes_of(out, f"{API}:9090", rc=rc)
    got = [(r.match.WhichOneof("path_specifier"), r.name.split(".", 1)[1]) for r in rs]
    assert got == [
        ("path", "rules[1].matches[0]"),  # service + method
        ("prefix", "rules[0].matches[0]"),  # service shop.Api (8 characters)
        ("safe_regex", "rules[1].matches[2]"),  # service "shop\..*" (7 characters)
        ("safe_regex", "rules[1].matches[1]"),  # method only
    ]
    assert rs[0].match.path == "/shop.Api/Get"
    assert rs[0].match.headers[0].string_match.safe_regex.regex == "ada.*"
    assert rs[1].match.prefix == "/shop.Api/"
    assert rs[2].match.safe_regex.regex == "/shop\\..*/[^/]+"
    assert rs[3].match.safe_regex.regex == "/[^/]+/Get"
    weights = [(c.name, c.weight.value) for c in rs[1].route.weighted_clusters.clusters]
    assert weights == [
        (f"outbound|9090||api-v1.{NS}.svc.cluster.local", 3),
        (f"outbound|9090||api-v2.{NS}.svc.cluster.local", 1),
    ]
    assert check_consistency(out) == []
