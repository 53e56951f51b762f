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


def test_rbac_principal_table_decides_as_the_rules_do():
    """Engines whose decision depends on the principal alone are compiled to a table; every
    engine, compiled or not, decides as its rules evaluated one by one."""
    import random

    from hyphal.proxy.runtime.rbac import AuthenticatedRule, RbacRequest

    rng = random.Random(7)
    names = [f"spiffe://td/ns/shop/sa/{n}" for n in ("a", "b", "c")]

    def principal_rule() -> object:
        kind = rng.choice([StringKind.EXACT] * 4 + [StringKind.PREFIX])
        return PrincipalRule(StringMatch(kind, rng.choice(names), ignore_case=rng.random() < .1))

    def rule(depth: int) -> object:
        roll = rng.random()
        if depth > 2 or roll < 0.35:
            return principal_rule()
        if roll < 0.5:
            return AnyRule()
        if roll < 0.55:
            return rng.choice([AuthenticatedRule(), PathRule(StringMatch(StringKind.EXACT, "/x")),
                               NotRule(principal_rule())])
        group = tuple(rule(depth + 1) for _ in range(rng.randrange(0, 3)))
        return (OrRule if roll < 0.85 else AndRule)(group)

    compiled = 0
    for _ in range(3000):
        allow = tuple(RbacPolicy(f"p{i}", rng.choice([AnyRule(), OrRule((AnyRule(),)), rule(1)]),
                                 rule(0)) for i in range(rng.randrange(0, 4)))
        deny = (RbacPolicy("d", AnyRule(), rule(0)),) if rng.random() < 0.1 else ()
        engine = RbacEngine(deny, allow if rng.random() < 0.95 else None)
        compiled += engine._by_principal is not None
        for who in (*names, "spiffe://td/ns/other/sa/x", None, ""):
            for path in ("/x", "/y"):
                request = RbacRequest(who, "GET", path, 8080, {}, None)
                assert engine.allowed(who, "GET", path, 8080, {}) == engine.evaluate(request)
    assert compiled > 1000  # the table is the common case, not a corner


def test_istio_principal_policy_is_a_table_lookup():
    bob = "spiffe://td/ns/shop/sa/bob"
    engine = RbacEngine(allow=(
        RbacPolicy("ns[shop]-policy[a]-rule[0]", OrRule((AnyRule(),)),
                   OrRule((OrRule((PrincipalRule(StringMatch(StringKind.EXACT, ALICE)),
                                   PrincipalRule(StringMatch(StringKind.EXACT, bob)))),))),
        RbacPolicy("ns[shop]-policy[b]-rule[0]", OrRule((AnyRule(),)),
                   OrRule((PrincipalRule(StringMatch(StringKind.EXACT, bob)),))),
    ))
    assert engine._by_principal is not None and not engine.needs_headers
    assert engine.allowed(ALICE, "GET", "/", 1, {}) == (True, "ns[shop]-policy[a]-rule[0]")
    assert engine.allowed(bob, "GET", "/", 1, {}) == (True, "ns[shop]-policy[a]-rule[0]")
    assert engine.allowed(None, "GET", "/", 1, {}) == (False, "")
    assert engine.allowed("spiffe://td/ns/x/sa/y", "GET", "/", 1, {}) == (False, "")


def test_route_selection_shortcuts_agree_with_matching():
    from hyphal.proxy.router import parse_target, select_route

    catch_all = RouteTable.build("t", (_vh("any", "*"),))
    assert catch_all.only is not None and catch_all.only.leading_prefix == "/"
    target = parse_target(b"/a", b"Whatever:1")
    assert target is not None
    vhost, route = select_route(catch_all, target, "GET", None)
    assert vhost is catch_all.only and route is catch_all.only.routes[0]
    star = parse_target(b"*", b"h")  # OPTIONS *: no prefix "/" route matches it
    assert star is not None and select_route(catch_all, star, "OPTIONS", None) == (vhost, None)

    picky = VirtualHost("picky", ("*",), (
        Route("get", RouteMatch(methods=frozenset({"GET"})), ClusterAction.single("g")),
        Route("api", RouteMatch(path=PathMatch(PathKind.PREFIX, "/api")),
              ClusterAction.single("a"))))
    assert picky.leading_prefix is None
    table = RouteTable.build("t", (_vh("exact", "product", "product:8080"), picky))
    assert table.only is None
    api = parse_target(b"/api/x", b"nowhere")
    assert api is not None
    assert select_route(table, api, "POST", None)[1].name == "api"
    assert select_route(table, api, "GET", None)[1].name == "get"
    for host in (b"product:8080", b"PRODUCT:8080", b"product:1"):
        found = parse_target(b"/", host)
        assert found is not None and select_route(table, found, "GET", None)[0].name == "exact"
