"""Compile unit tests: every supported field lands in the runtime tables; unsupported ones NACK."""

from __future__ import annotations

import re
from collections.abc import Mapping

import proxy_protos as P
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf import any_pb2, wrappers_pb2

from hyphal.proxy.compile import Compiler, NodeContext, Snapshot, compile_secret
from hyphal.proxy.compile.clusters import compile_cluster, compile_load_assignment
from hyphal.proxy.compile.listeners import compile_listener
from hyphal.proxy.compile.routes import compile_route_configuration
from hyphal.proxy.compile.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, CompileError
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    DirectResponse,
    LbPolicy,
    ListenerKind,
    PathKind,
)

CTX = NodeContext(
    identity=P.SPIFFE,
    workload="product-v1",
    namespace="shop",
    app_ports=((8080, 21002), (5432, 21011)),
)


# ---------------------------------------------------------------- listeners


def test_outbound_http_listener_uses_rds() -> None:
    spec = compile_listener(P.outbound_http_listener(21001))
    assert (spec.name, spec.host, spec.port) == ("outbound_http", "127.0.0.1", 21001)
    assert spec.kind is ListenerKind.OUTBOUND_HTTP
    assert spec.route_config == "outbound_http" and spec.inline_routes is None
    assert spec.tls is None and spec.rbac is None


def test_inbound_http_listener_tls_rbac_inline_routes() -> None:
    spec = compile_listener(P.inbound_http_listener(8080, 21003))
    assert spec.kind is ListenerKind.INBOUND_HTTP and spec.port == 21003
    assert spec.tls is not None and spec.tls.require_client_cert
    assert spec.inline_routes is not None
    r = spec.inline_routes.virtual_hosts[0].routes[0]
    assert isinstance(r.action, ClusterAction) and r.action.clusters[0].name == "inbound|8080||"
    assert r.timeout_s is None  # timeout 0 = disabled
    assert spec.rbac is not None
    web = "spiffe://cluster.local/ns/shop/sa/web"
    assert spec.rbac.allowed(web, "GET", "/x", 8080, {}) == (
        True,
        "ns[shop]-policy[allow-web]-rule[0]",
    )
    assert spec.rbac.allowed(web, "POST", "/x", 8080, {})[0] is False
    assert spec.rbac.allowed(web, "GET", "/admin/x", 8080, {}) == (
        False,
        "ns[shop]-policy[deny-admin]-rule[0]",
    )
    assert (
        spec.rbac.allowed("spiffe://cluster.local/ns/shop/sa/evil", "GET", "/", 8080, {})[0]
        is False
    )


def test_inbound_tcp_listener() -> None:
    spec = compile_listener(P.inbound_tcp_listener(5432, 21010))
    assert spec.kind is ListenerKind.INBOUND_TCP
    assert spec.tcp_cluster == "inbound|5432||"
    assert spec.rbac is not None and spec.rbac.allow is not None
    assert spec.rbac.allowed("spiffe://cluster.local/ns/shop/sa/web", "", "", 0, {})[0]
    assert not spec.rbac.allowed(None, "", "", 0, {})[0]


def test_unknown_http_filter_is_nacked() -> None:
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    lst = P.outbound_http_listener()
    hcm = hcm_pb2.HttpConnectionManager()
    lst.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    hcm.http_filters.insert(0, hcm_pb2.HttpFilter(name="envoy.filters.http.lua"))
    lst.filter_chains[0].filters[0].typed_config.Pack(hcm)
    with pytest.raises(CompileError) as ei:
        compile_listener(lst)
    assert str(ei.value) == (
        "Listener 'outbound_http': filter_chains[0].filters[0].typed_config.http_filters[0].name: "
        "http filter 'envoy.filters.http.lua' is not supported"
    )


def test_router_must_be_last() -> None:
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    lst = P.outbound_http_listener()
    hcm = hcm_pb2.HttpConnectionManager()
    lst.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    hcm.http_filters.reverse()
    lst.filter_chains[0].filters[0].typed_config.Pack(hcm)
    with pytest.raises(CompileError, match="router must be the last http filter"):
        compile_listener(lst)


def test_unsupported_listener_field_is_named() -> None:
    lst = P.outbound_http_listener()
    lst.per_connection_buffer_limit_bytes.value = 1  # (use_original_dst: hyphal.proxy.capture)
    with pytest.raises(
        CompileError,
        match=r"Listener 'outbound_http': per_connection_buffer_limit_bytes: not supported",
    ):
        compile_listener(lst)


def test_api_listener_is_refused() -> None:
    lst = P.outbound_http_listener()
    lst.api_listener.api_listener.CopyFrom(any_pb2.Any())
    with pytest.raises(CompileError, match="api_listener"):
        compile_listener(lst)


# ---------------------------------------------------------------- routes


def test_route_configuration_every_field() -> None:
    table = compile_route_configuration(P.route_configuration())
    assert table.name == "outbound_http"
    vh = table.find_virtual_host(f"{P.FQDN}:8080")
    assert vh is not None and vh is table.find_virtual_host("product")
    assert vh.request_headers_to_add[0].name == "x-vh"
    canary, regex, exact, default = vh.routes
    # match
    m = canary.match
    assert m.path.kind is PathKind.PREFIX and m.path.value == "/api"
    assert m.methods == frozenset({"GET"})
    assert [h.name for h in m.headers] == ["x-user"]
    assert m.matches("GET", "/api/x", "debug=1", {"x-user": "jason"})
    assert not m.matches("GET", "/api/x", "", {"x-user": "jason"})
    assert not m.matches("POST", "/api/x", "debug=1", {"x-user": "jason"})
    # action
    assert isinstance(canary.action, ClusterAction)
    assert [(c.name, c.weight) for c in canary.action.clusters] == [
        (P.OUT_V1, 80),
        (f"outbound|8080|v2|{P.FQDN}", 20),
    ]
    assert canary.action.cumulative == (80, 100)
    assert canary.timeout_s == 2.5
    assert canary.retry is not None
    assert canary.retry.num_retries == 3 and canary.retry.per_try_timeout_s == 0.5
    assert canary.retry.retry_on == {"5xx", "connect-failure", "retriable-status-codes"}
    assert canary.retry.retriable_status_codes == {502}
    assert canary.retry.base_interval_s == pytest.approx(0.01)
    assert canary.prefix_rewrite == "/v2/api" and canary.host_rewrite == "product.internal"
    assert canary.mirrors[0].cluster == P.OUT_V1 and canary.mirrors[0].fraction == 0.25
    assert canary.request_headers_to_add[0].name == "x-route"
    assert canary.request_headers_to_add[0].append is False
    assert canary.request_headers_to_remove == ("x-internal",)
    assert canary.response_headers_to_add[0].value == "hyphal"
    assert canary.response_headers_to_remove == ("server",)
    assert canary.fault is not None
    assert canary.fault.delay_s == 0.5 and canary.fault.delay_fraction == 0.5
    assert canary.fault.abort_status == 503 and canary.fault.abort_fraction == 0.1
    # regex route and rewrite
    assert regex.match.path.kind is PathKind.REGEX
    assert regex.match.matches("GET", "/items/42", "", None)
    assert not regex.match.matches("GET", "/items/4x", "", None)
    assert regex.regex_rewrite is not None
    assert (
        regex.regex_rewrite.pattern.sub(regex.regex_rewrite.substitution, "/items/42")
        == "/item?id=42"
    )
    # vhost retry policy is inherited by routes without their own
    assert regex.retry is not None and regex.retry.retry_on == {"connect-failure"}
    assert regex.timeout_s == 15.0
    assert isinstance(exact.action, DirectResponse) and exact.action.status == 200
    assert exact.match.path.kind is PathKind.EXACT
    assert isinstance(default.action, ClusterAction)


def test_bad_regex_is_nacked_with_its_location() -> None:
    rcfg = P.route_configuration()
    rcfg.virtual_hosts[0].routes[1].match.safe_regex.regex = "(unclosed"
    with pytest.raises(CompileError) as ei:
        compile_route_configuration(rcfg)
    msg = str(ei.value)
    assert msg.startswith("RouteConfiguration 'outbound_http': virtual_hosts[0].routes[1].match")
    assert "invalid path regex '(unclosed'" in msg


def test_zero_total_weight_is_nacked() -> None:
    rcfg = P.route_configuration()
    for c in rcfg.virtual_hosts[0].routes[0].route.weighted_clusters.clusters:
        c.weight.value = 0
    with pytest.raises(CompileError, match=r"routes\[0\]\.route\.weighted_clusters: .*non-zero"):
        compile_route_configuration(rcfg)


def test_unsupported_route_feature_is_nacked() -> None:
    rcfg = P.route_configuration()
    rcfg.virtual_hosts[0].routes[3].route.idle_timeout.seconds = 5
    with pytest.raises(CompileError, match=r"routes\[3\]\.route\.idle_timeout: not supported"):
        compile_route_configuration(rcfg)


def test_unknown_retry_condition() -> None:
    rcfg = P.route_configuration()
    rcfg.virtual_hosts[0].routes[0].route.retry_policy.retry_on = "5xx,sometimes"
    with pytest.raises(CompileError, match="unknown retry condition.*sometimes"):
        compile_route_configuration(rcfg)


def test_duplicate_domain_is_nacked() -> None:
    rcfg = P.route_configuration()
    rcfg.virtual_hosts.append(rc.VirtualHost(name="dup", domains=["product"], routes=[]))
    with pytest.raises(CompileError, match="domain 'product' is in virtual hosts"):
        compile_route_configuration(rcfg)


# ---------------------------------------------------------------- clusters and endpoints


def test_cluster_every_field() -> None:
    cc = compile_cluster(P.eds_cluster())
    assert cc.eds_name == P.OUT
    s = cc.spec
    assert s.name == P.OUT and s.endpoints == ()
    assert s.lb is LbPolicy.LEAST_REQUEST and s.connect_timeout_s == 1.5
    assert (
        s.circuit_breaker.max_connections,
        s.circuit_breaker.max_pending_requests,
        s.circuit_breaker.max_requests,
        s.circuit_breaker.max_retries,
    ) == (10, 5, 20, 2)
    assert s.outlier is not None
    assert (
        s.outlier.consecutive_5xx,
        s.outlier.interval_s,
        s.outlier.base_ejection_time_s,
        s.outlier.max_ejection_percent,
    ) == (3, 1.0, 2.0, 50)
    assert s.idle_timeout_s == 30 and s.max_requests_per_connection == 100
    assert s.health_check is not None and s.health_check.path == "/ready"
    assert s.health_check.unhealthy_threshold == 3 and s.health_check.interval_s == 2
    assert s.tls is not None and s.tls.sni == P.OUT and s.tls.expected_sans == {P.SPIFFE}
    assert s.service == P.FQDN and s.lb_metadata["service"] == P.FQDN


def test_cluster_defaults() -> None:
    s = compile_cluster(P.eds_cluster(full=False)).spec
    assert s.lb is LbPolicy.ROUND_ROBIN and s.tls is None and s.outlier is None
    assert s.circuit_breaker.max_requests == 1024 and s.service == P.FQDN


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: setattr(c, "type", cluster_pb2.Cluster.STRICT_DNS),
            "Cluster 'outbound|8080||product.shop.svc.cluster.local': type: STRICT_DNS is not supported",
        ),
        (
            lambda c: setattr(c, "lb_policy", cluster_pb2.Cluster.CLUSTER_PROVIDED),
            "lb_policy: CLUSTER_PROVIDED is not supported",
        ),
        (lambda c: c.http2_protocol_options.SetInParent(), "http2_protocol_options: not supported"),
        (
            lambda c: c.circuit_breakers.thresholds.add(),
            "circuit_breakers.thresholds: only one (DEFAULT priority) is supported",
        ),
    ],
)
def test_cluster_nacks(mutate: object, expected: str) -> None:
    c = P.eds_cluster()
    mutate(c)  # type: ignore[operator]
    with pytest.raises(CompileError, match=re.escape(expected)):
        compile_cluster(c)


def test_upstream_tls_must_use_default_and_rootca() -> None:
    c = P.eds_cluster()
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    u = tls_pb2.UpstreamTlsContext()
    c.transport_socket.typed_config.Unpack(u)
    u.common_tls_context.tls_certificate_sds_secret_configs[0].name = "mine"
    c.transport_socket.typed_config.Pack(u)
    with pytest.raises(
        CompileError, match=r"tls_certificate_sds_secret_configs: must be exactly \['default'\]"
    ):
        compile_cluster(c)


def test_load_assignment() -> None:
    eps = compile_load_assignment(P.load_assignment(ports=(21003, 21013)))
    assert [(e.host, e.port, e.weight, e.healthy) for e in eps] == [
        ("127.0.0.1", 21003, 1, True),
        ("127.0.0.1", 21013, 2, False),
    ]
    assert eps[0].labels == {"app": "product", "version": "v1"} and eps[0].identity == P.SPIFFE


def test_load_assignment_zero_weight_nacked() -> None:
    cla = P.load_assignment()
    cla.endpoints[0].lb_endpoints[0].load_balancing_weight.value = 0
    with pytest.raises(
        CompileError, match=r"lb_endpoints\[0\]\.load_balancing_weight: must be >= 1"
    ):
        compile_load_assignment(cla)


def test_rootca_secret() -> None:
    pem, _ = P.make_root()
    assert compile_secret(P.rootca_secret(pem)) == pem
    with pytest.raises(CompileError, match="not PEM certificates|holds no certificate"):
        compile_secret(P.rootca_secret(b"garbage"))


# ---------------------------------------------------------------- whole-set assembly


def packs(*msgs: object) -> list[any_pb2.Any]:
    return [P.pack(m) for m in msgs]  # type: ignore[arg-type]


def accepted_all(c: Compiler) -> dict[str, Mapping[str, object]]:
    pem, _ = P.make_root()
    return {
        CLUSTER: c.check(CLUSTER, packs(P.eds_cluster())),
        ENDPOINT: c.check(ENDPOINT, packs(P.load_assignment())),
        LISTENER: c.check(
            LISTENER,
            packs(P.outbound_http_listener(), P.inbound_http_listener(), P.inbound_tcp_listener()),
        ),
        ROUTE: c.check(ROUTE, packs(P.route_configuration())),
        SECRET: c.check(SECRET, packs(P.rootca_secret(pem))),
    }


def test_wanted_and_assemble() -> None:
    c = Compiler(CTX)
    acc = accepted_all(c)
    assert c.wanted(acc) == {ENDPOINT: {P.OUT}, ROUTE: {"outbound_http"}, SECRET: {"ROOTCA"}}
    snap = c.assemble(acc, {CLUSTER: "c1", LISTENER: "l1"}, allow_missing=False)
    assert isinstance(snap, Snapshot) and snap.trust_bundle_pem is not None and snap.missing == ()
    cfg = snap.config
    assert "CDS=c1" in cfg.version and "LDS=l1" in cfg.version
    assert cfg.identity == P.SPIFFE and cfg.workload == "product-v1" and cfg.namespace == "shop"
    assert [lst.name for lst in cfg.listeners] == ["inbound|5432", "inbound|8080", "outbound_http"]
    assert cfg.clusters[P.OUT].endpoints[0].port == 21003
    # inbound clusters synthesized from the bootstrap's PORTS when CDS does not carry them
    assert cfg.clusters["inbound|8080||"].endpoints[0].address == "127.0.0.1:21002"
    assert cfg.clusters["inbound|5432||"].endpoints[0].port == 21011
    assert cfg.route_table_for(cfg.listeners[2]) is cfg.routes["outbound_http"]


def test_assemble_waits_for_references_then_allows_missing() -> None:
    c = Compiler(CTX)
    acc = accepted_all(c)
    del acc[ENDPOINT]
    acc[ROUTE] = {}
    assert c.assemble(acc, {}, allow_missing=False) is None
    snap = c.assemble(acc, {}, allow_missing=True)
    assert snap is not None
    assert snap.missing == (f"EDS/{P.OUT}", "RDS/outbound_http")
    assert snap.config.clusters[P.OUT].endpoints == ()


def test_check_rejects_wrong_type_and_duplicates() -> None:
    c = Compiler(CTX)
    with pytest.raises(CompileError, match="a CDS response holds"):
        c.check(CLUSTER, packs(P.outbound_http_listener()))
    with pytest.raises(CompileError, match="sent twice"):
        c.check(CLUSTER, packs(P.eds_cluster(), P.eds_cluster()))


def test_static_cluster_from_control_plane_wins() -> None:
    from envoy.config.cluster.v3 import cluster_pb2 as cp

    static = cp.Cluster(
        name="inbound|8080||",
        type=cp.Cluster.STATIC,
        load_assignment=P.load_assignment("inbound|8080||", ports=(29999,)),
    )
    c = Compiler(CTX)
    acc = accepted_all(c)
    acc[CLUSTER] = c.check(CLUSTER, packs(P.eds_cluster(), static))
    snap = c.assemble(acc, {}, allow_missing=False)
    assert snap is not None
    assert snap.config.clusters["inbound|8080||"].endpoints[0].port == 29999


def test_wrapped_value_helper_unused() -> None:
    # keeps wrappers import honest: UInt32Value weights above are real proto wrappers
    assert wrappers_pb2.UInt32Value(value=3).value == 3
