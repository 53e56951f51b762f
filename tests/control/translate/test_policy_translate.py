"""RateLimitPolicy, RequestAuthentication, request-auth RBAC and PERMISSIVE mTLS -> the inbound
Listener's protos; and jwksUri fetched by the control plane (a real HTTP server on loopback)
and inlined into the jwt_authn filter."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from translate_helpers import CA, SHOP, load, run, sidecar, unpack

from hyphal.control.jwks import JwksError, JwksResolver, fetch_jwks
from hyphal.control.translate import naming
from hyphal.control.translate.pb import hcm_pb2, http_rbac_pb2, network_rbac_pb2
from hyphal.control.translate.source import MeshSnapshotSource

FRONT = sidecar("frontend", "shop", {"app": "frontend"}, "frontend", base=21000)
PRODUCT = sidecar("product-v1", "shop", {"app": "product", "version": "v1"}, "product",
                  base=21100)
JWKS = '{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'  # noqa: E501

RL = """\
apiVersion: hyphal.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: product, namespace: shop}
spec:
  targetRef: {kind: Service, name: product}
  total: {requestsPerSecond: 20, burst: 30}
  identity: {requestsPerSecond: 5}
  overrides:
  - requestsPerSecond: 10
    clientRefs: [{name: frontend}, {name: batch, namespace: jobs}]
"""


def ra(rules: str, selector: str = "{matchLabels: {app: product}}") -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: shop}}
spec:
  selector: {selector}
  jwtRules:
{rules}"""


def http_filters(out: dict[str, dict[str, Any]], listener: str = "inbound|8080") -> list[Any]:
    lst = out[naming.LISTENER_TYPE][listener]
    hcm = unpack(lst.filter_chains[0].filters[0].typed_config, hcm_pb2.HttpConnectionManager)
    return list(hcm.http_filters)


def test_rate_limit_policy_on_the_selected_workload_only() -> None:
    rs = load(SHOP, RL)
    filters = http_filters(run(rs, PRODUCT))
    assert [f.name for f in filters] == ["envoy.filters.http.local_ratelimit",
                                         "envoy.filters.http.router"]
    rl = unpack(filters[0].typed_config, local_rate_limit_pb2.LocalRateLimit)
    assert rl.token_bucket.max_tokens == 30
    assert rl.token_bucket.tokens_per_fill.value == 20
    assert rl.token_bucket.fill_interval.seconds == 1
    assert rl.filter_enabled.default_value.numerator == 100
    assert rl.filter_enforced.default_value.numerator == 100
    assert rl.enable_x_ratelimit_headers == 1  # DRAFT_VERSION_03
    assert rl.status.code == 429
    assert rl.max_dynamic_descriptors.value == 10_000
    got = [(d.entries[0].key, d.entries[0].value, d.token_bucket.tokens_per_fill.value)
           for d in rl.descriptors]
    assert got == [
        ("source.principal", "", 5),
        ("source.principal", "spiffe://cluster.local/ns/shop/sa/frontend", 10),
        ("source.principal", "spiffe://cluster.local/ns/jobs/sa/batch", 10),
    ]
    # the caller's sidecar is not limited: limits live on the destination
    assert [f.name for f in http_filters(run(rs, FRONT))] == ["envoy.filters.http.router"]


def test_rate_limit_by_workload_and_selector() -> None:
    by_workload = RL.replace("{kind: Service, name: product}", "{kind: Workload, name: product-v1}")
    assert len(http_filters(run(load(SHOP, by_workload), PRODUCT))) == 2
    by_selector = RL.replace("targetRef: {kind: Service, name: product}",
                             "selector: {matchLabels: {version: v1}}")
    assert len(http_filters(run(load(SHOP, by_selector), PRODUCT))) == 2
    assert len(http_filters(run(load(SHOP, by_selector), FRONT))) == 1
    # not mesh-wide from another namespace
    other_ns = by_selector.replace("namespace: shop", "namespace: hyphal-system")
    assert len(http_filters(run(load(SHOP, other_ns), PRODUCT))) == 1


def test_request_authentication_becomes_jwt_authn_before_rbac() -> None:
    rules = (f"  - issuer: https://issuer.test\n    audiences: [shop]\n    jwks: '{JWKS}'\n"
             "    fromHeaders: [{name: x-jwt, prefix: 'Token '}]\n    fromParams: [t]\n"
             "    outputPayloadToHeader: x-jwt-payload\n    forwardOriginalToken: true\n")
    ap = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: need-jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: product}}
  rules: [{from: [{source: {requestPrincipals: ['*']}}]}]
"""
    filters = http_filters(run(load(SHOP, ra(rules), RL, ap), PRODUCT))
    assert [f.name for f in filters] == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]
    auth = unpack(filters[0].typed_config, jwt_pb2.JwtAuthentication)
    (name,) = auth.providers
    p = auth.providers[name]
    assert p.issuer == "https://issuer.test" and list(p.audiences) == ["shop"]
    assert json.loads(p.local_jwks.inline_string) == json.loads(JWKS)
    assert [(h.name, h.value_prefix) for h in p.from_headers] == [("x-jwt", "Token ")]
    assert list(p.from_params) == ["t"] and p.forward
    assert p.forward_payload_header == "x-jwt-payload"
    assert p.clock_skew_seconds == 60
    (rule,) = auth.rules
    assert rule.match.prefix == "/"
    reqs = rule.requires.requires_any.requirements
    assert [r.WhichOneof("requires_type") for r in reqs] == ["provider_name", "allow_missing"]
    assert reqs[0].provider_name == name


def test_request_principals_and_auth_conditions_in_rbac() -> None:
    ap = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  selector: {matchLabels: {app: product}}
  rules:
  - from: [{source: {requestPrincipals: ['https://issuer.test/*']}}]
    when:
    - {key: 'request.auth.claims[groups]', values: [admin]}
    - {key: request.auth.audiences, values: [shop]}
"""
    filters = http_filters(run(load(SHOP, ap), PRODUCT))
    rbac = unpack(filters[0].typed_config, http_rbac_pb2.RBAC).rules
    (policy,) = rbac.policies.values()
    ids = policy.principals[0].and_ids.ids
    first = ids[0].metadata
    assert first.filter == "istio_authn"
    assert [s.key for s in first.path] == ["request.auth.principal"]
    assert first.value.string_match.prefix == "https://issuer.test/"
    claims = ids[1].metadata
    assert [s.key for s in claims.path] == ["request.auth.claims", "groups"]
    assert claims.value.list_match.one_of.string_match.exact == "admin"
    assert [s.key for s in ids[2].metadata.path] == ["request.auth.audiences"]


def test_request_principals_fail_closed_on_tcp_ports() -> None:
    ap = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  action: {action}
  rules: [{from: [{source: {requestPrincipals: ['*'], namespaces: [shop]}}]}]
"""
    tcp = sidecar("db", "shop", {"app": "db"}, "db", base=21200,
                  ports=[{"name": "tcp", "port": 5432, "protocol": "TCP", "app_port": 21201,
                          "inbound_port": 21202}])

    def net_rbac(action: str) -> Any:
        out = run(load(SHOP, ap.replace("{action}", action)), tcp)
        f = out[naming.LISTENER_TYPE]["inbound|5432"].filter_chains[0].filters[0]
        return unpack(f.typed_config, network_rbac_pb2.RBAC).rules

    assert dict(net_rbac("ALLOW").policies) == {}  # cannot be checked: allows nothing
    deny = net_rbac("DENY")
    (policy,) = deny.policies.values()
    assert "metadata" not in str(policy)  # the JWT part is dropped: the rule denies more


def pa(mode: str, port_level: str = "") -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: product, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: product}}}}
  mtls: {{mode: {mode}}}
{port_level}"""


def test_permissive_is_tls_inspector_and_two_chains() -> None:
    lst = run(load(SHOP, pa("PERMISSIVE")), PRODUCT)[naming.LISTENER_TYPE]["inbound|8080"]
    assert [f.name for f in lst.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    tls, plain = lst.filter_chains
    assert tls.filter_chain_match.transport_protocol == "tls"
    assert tls.HasField("transport_socket")
    assert plain.filter_chain_match.transport_protocol == "raw_buffer"
    assert not plain.HasField("transport_socket")
    assert list(tls.filters) == list(plain.filters)


def test_port_level_mtls_overrides_the_workload_mode() -> None:
    ports = [{"name": "http", "port": 8080, "protocol": "HTTP", "app_port": 1, "inbound_port": 2},
             {"name": "admin", "port": 9090, "protocol": "HTTP", "app_port": 3,
              "inbound_port": 4}]
    node = sidecar("product-v1", "shop", {"app": "product"}, "product", ports=ports)
    out = run(load(SHOP, pa("STRICT", "  portLevelMtls: {9090: {mode: PERMISSIVE}}\n")), node)
    assert len(out[naming.LISTENER_TYPE]["inbound|8080"].filter_chains) == 1
    assert len(out[naming.LISTENER_TYPE]["inbound|9090"].filter_chains) == 2


# ------------------------------------------------------------------ jwksUri


class _Keys(http.server.BaseHTTPRequestHandler):
    body = JWKS.encode()
    hits = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def jwks_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_fetch_jwks_checks_scheme_and_shape(jwks_server: str) -> None:
    assert json.loads(fetch_jwks(jwks_server)) == json.loads(JWKS)
    with pytest.raises(JwksError, match="only http:// and https://"):
        fetch_jwks("file:///etc/passwd")
    with pytest.raises(JwksError, match="cannot fetch"):
        fetch_jwks("http://127.0.0.1:1/jwks.json", timeout=1)


def test_resolver_refreshes_and_keeps_last_good() -> None:
    answers = [JWKS, JwksError("down"), '{"keys": []}']
    calls: list[str] = []

    def fetch(uri: str) -> str:
        calls.append(uri)
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    r = JwksResolver(fetch, refresh_s=10)
    rs = load(SHOP, ra("  - {issuer: me, jwksUri: 'http://127.0.0.1:9/k'}\n"))
    try:
        before = r.resolve(rs)
        (ra_before,) = [x for x in before if x.kind == "RequestAuthentication"]
        assert ra_before.spec.jwt_rules[0].jwks is None  # not fetched yet
        r._stop.set()  # drive refresh by hand in this test
        assert r.refresh(now=100.0) is True
        assert r.refresh(now=105.0) is False  # not due
        assert r.refresh(now=111.0) is False  # failed: last good kept
        assert r.key_sets == {"http://127.0.0.1:9/k": JWKS}
        assert r.refresh(now=122.0) is True
        (after,) = [x for x in r.resolve(rs) if x.kind == "RequestAuthentication"]
        assert after.spec.jwt_rules[0].jwks == '{"keys": []}'
        assert after.spec.jwt_rules[0].jwks_uri == "http://127.0.0.1:9/k"
        assert after.source == ra_before.source
    finally:
        r.close()


def test_snapshot_source_fetches_jwks_uri_and_pushes_it_inline(jwks_server: str) -> None:
    rs = load(SHOP, ra(f"  - {{issuer: me, jwksUri: '{jwks_server}'}}\n"))
    source = MeshSnapshotSource(rs, ca_bundle=CA)
    pushed = threading.Event()
    source.add_listener(pushed.set)

    def inline_keys() -> str:
        snap = source.snapshot_for(PRODUCT)
        lst = next(m for m in snap_messages(snap) if getattr(m, "name", "") == "inbound|8080")
        hcm = unpack(lst.filter_chains[0].filters[0].typed_config, hcm_pb2.HttpConnectionManager)
        auth = unpack(hcm.http_filters[0].typed_config, jwt_pb2.JwtAuthentication)
        (p,) = auth.providers.values()
        return str(p.local_jwks.inline_string)

    try:
        assert pushed.wait(5), "no push after the jwksUri was fetched"
        deadline = time.monotonic() + 5
        while json.loads(inline_keys()) != json.loads(JWKS):
            assert time.monotonic() < deadline, inline_keys()
            time.sleep(0.05)
        assert _Keys.hits >= 1
    finally:
        source._jwks.close()


def snap_messages(snap: Any) -> list[Any]:
    from envoy.config.listener.v3 import listener_pb2

    out = []
    for packed in snap.names(naming.LISTENER_TYPE).values():
        m = listener_pb2.Listener()
        assert packed.Unpack(m)
        out.append(m)
    return out
