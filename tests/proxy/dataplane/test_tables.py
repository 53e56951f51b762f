"""Runtime tables (pure): matchers, domain lookup, weighted choice, RBAC, balancers."""

from __future__ import annotations

from collections import Counter

import pytest

from hyphal.proxy.runtime.tables import (
    AndRule,
    AnyRule,
    ClusterAction,
    HeaderMatcher,
    HeaderRule,
    MethodRule,
    NotRule,
    OrRule,
    PathKind,
    PathMatch,
    PathRule,
    PortRule,
    PrincipalRule,
    QueryMatcher,
    RbacEngine,
    RbacPolicy,
    Route,
    RouteMatch,
    RouteTable,
    StringKind,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)


def test_string_matchers():
    assert StringMatch(StringKind.EXACT, "Abc", ignore_case=True).matches("aBC")
    assert StringMatch(StringKind.PREFIX, "/api").matches("/api/x")
    assert StringMatch(StringKind.SUFFIX, ".json").matches("a.json")
    assert StringMatch(StringKind.CONTAINS, "mid").matches("amidb")
    regex = StringMatch(StringKind.REGEX, "v[0-9]+")
    assert regex.matches("v12") and not regex.matches("xv12")  # full match, as RE2 in Envoy
    with pytest.raises(ValueError, match="invalid regex"):
        StringMatch(StringKind.REGEX, "(")


def test_route_match_path_headers_query_method():
    match = RouteMatch(path=PathMatch(PathKind.PREFIX, "/API", case_sensitive=False),
                       headers=(HeaderMatcher("x-user", StringMatch(StringKind.EXACT, "jason")),
                                HeaderMatcher("x-debug", invert=True)),
                       query=(QueryMatcher("v", StringMatch(StringKind.EXACT, "2")),),
                       methods=frozenset({"GET"}))
    headers = {"x-user": "jason"}
    assert match.matches("GET", "/api/items", "v=2&x=1", headers)
    assert not match.matches("POST", "/api/items", "v=2", headers)
    assert not match.matches("GET", "/api/items", "v=3", headers)
    assert not match.matches("GET", "/api/items", "v=2", {**headers, "x-debug": "1"})
    assert not match.matches("GET", "/other", "v=2", headers)
    exact = RouteMatch(path=PathMatch(PathKind.EXACT, "/a"))
    assert exact.matches("GET", "/a", "", None) and not exact.matches("GET", "/a/", "", None)
    regex = RouteMatch(path=PathMatch(PathKind.REGEX, r"/items/\d+"))
    assert regex.matches("GET", "/items/42", "", None) and not regex.matches("GET", "/items/x", "", None)


def _vh(name: str, *domains: str) -> VirtualHost:
    return VirtualHost(name, domains, (Route("r", RouteMatch(), ClusterAction.single(name)),))


def test_domain_lookup_order():
    table = RouteTable.build("t", (_vh("exact", "product", "product:8080"), _vh("suffix", "*.shop"),
                                   _vh("longer", "*.svc.shop"), _vh("prefix", "api.*"),
                                   _vh("any", "*")))
    assert table.find_virtual_host("PRODUCT:8080").name == "exact"
    assert table.find_virtual_host("product:9999").name == "exact"  # retried without the port
    assert table.find_virtual_host("a.svc.shop").name == "longer"
    assert table.find_virtual_host("a.shop").name == "suffix"
    assert table.find_virtual_host("api.example").name == "prefix"
    assert table.find_virtual_host("other").name == "any"
    with pytest.raises(ValueError, match="must be unique"):
        RouteTable.build("t", (_vh("a", "x"), _vh("b", "x")))


def test_weighted_choice_is_exact_over_the_draw_space():
    action = ClusterAction((WeightedCluster("a", 95), WeightedCluster("b", 5), WeightedCluster("c", 0)))
    picks = Counter(action.pick(draw).name for draw in range(action.total))
    assert picks == {"a": 95, "b": 5}
    with pytest.raises(ValueError, match="non-zero"):
        ClusterAction((WeightedCluster("a", 0),))


ALICE = "spiffe://td/ns/shop/sa/alice"


def test_rbac_deny_then_allow():
    engine = RbacEngine(
        deny=(RbacPolicy("no-delete", MethodRule(frozenset({"DELETE"})), AnyRule()),),
        allow=(RbacPolicy("alice-api",
                          AndRule((PathRule(StringMatch(StringKind.PREFIX, "/api")),
                                   PortRule(frozenset({8080})))),
                          OrRule((PrincipalRule(StringMatch(StringKind.EXACT, ALICE)),))),
               RbacPolicy("health", PathRule(StringMatch(StringKind.EXACT, "/healthz")),
                          NotRule(AnyRule()) if False else AnyRule())))
    assert engine.allowed(ALICE, "GET", "/api/x", 8080, {}) == (True, "alice-api")
    assert engine.allowed(ALICE, "DELETE", "/api/x", 8080, {}) == (False, "no-delete")
    assert engine.allowed(None, "GET", "/api/x", 8080, {}) == (False, "")
    assert engine.allowed(ALICE, "GET", "/api/x", 9090, {}) == (False, "")
    assert engine.allowed(None, "GET", "/healthz", 1, {}) == (True, "health")
    header_rule = RbacEngine(allow=(RbacPolicy("hdr", HeaderRule(HeaderMatcher(
        "x-token", StringMatch(StringKind.PREFIX, "ok"))), AnyRule()),))
    assert header_rule.allowed(None, "GET", "/", 1, {"x-token": "ok-1"})[0]
    assert not header_rule.allowed(None, "GET", "/", 1, {})[0]
    assert RbacEngine(allow=()).allowed(ALICE, "GET", "/", 1, {}) == (False, "")
    assert RbacEngine().allowed(None, "GET", "/", 1, {}) == (True, "")
