"""The sidecar compiles what the control plane sends for policy: jwt_authn and local_ratelimit
(before rbac) into the listener's request filters, istio_authn metadata principals into RBAC,
PERMISSIVE's two chains into a permissive DownstreamTls; and NACKs shapes it cannot enforce."""

from __future__ import annotations

import pytest
from jwt_helpers import SigningKey, jwks

from hyphal.config.loader import load_text
from hyphal.control.translate import jwt as jwt_t
from hyphal.control.translate import ratelimit as rl_t
from hyphal.control.translate import rbac as rbac_t
from hyphal.control.translate.listeners import inbound_listener, outbound_http_listener
from hyphal.control.translate.pb import hcm_pb2, pack
from hyphal.proxy.compile.listeners import compile_listener
from hyphal.proxy.compile.types import CompileError
from hyphal.proxy.filters.jwt import JwtFilter
from hyphal.proxy.filters.ratelimit import RateLimitFilter

KEY = SigningKey.make("EdDSA", "k1")
DOCS = f"""\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: shop}}
spec:
  jwtRules: [{{issuer: me, jwks: '{jwks(KEY)}', audiences: [shop]}}]
---
apiVersion: hyphal.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{name: rl, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  total: {{requestsPerSecond: 7, burst: 9}}
  identity: {{requestsPerSecond: 2}}
  overrides: [{{requestsPerSecond: 4, clientRefs: [{{name: web}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ap, namespace: shop}}
spec:
  rules: [{{from: [{{source: {{requestPrincipals: ['me/*']}}}}],
           when: [{{key: 'request.auth.claims[groups]', values: [admin]}}]}}]
"""


def listener(*, permissive: bool = False, order: str = "normal") -> object:
    ra, rl, ap = load_text(DOCS, "t.yaml")
    jwt_f = jwt_t.for_workload([ra], "shop", {"app": "api"}, {})
    rl_f = rl_t.for_workload([rl], None, "shop", "api", {"app": "api"},  # type: ignore[arg-type]
                             "cluster.local")
    allow = rbac_t.build_rbac([ap], "ALLOW", tcp=False)
    filters = [jwt_f, rl_f] if order == "normal" else []
    lst = inbound_listener(8080, 15006, http=True, tls=True, allow=allow,
                           permissive=permissive, request_filters=filters)
    if order == "after-rbac":
        for chain in lst.filter_chains:
            hcm = hcm_pb2.HttpConnectionManager()
            chain.filters[0].typed_config.Unpack(hcm)
            hcm.http_filters.insert(1, rl_f)
            chain.filters[0].typed_config.CopyFrom(pack(hcm))
    return lst


def test_request_filters_and_metadata_rbac_compile() -> None:
    spec = compile_listener(listener())
    jwt_f, rl_f = spec.request_filters
    assert isinstance(jwt_f, JwtFilter) and isinstance(rl_f, RateLimitFilter)
    (p,) = jwt_f.providers
    assert p.issuer == "me" and p.audiences == frozenset({"shop"}) and len(p.keys) == 1
    assert jwt_f.allow_missing and not jwt_f.allow_failed
    cfg = rl_f.config
    assert cfg.total is not None and (cfg.total.max_tokens, cfg.total.tokens_per_fill) == (9, 7)
    assert cfg.identity is not None and cfg.identity.tokens_per_fill == 2
    assert cfg.overrides[0][0] == "spiffe://cluster.local/ns/shop/sa/web"
    assert cfg.x_ratelimit_headers and cfg.stat_prefix == "inbound|8080"
    assert spec.tls is not None and not spec.tls.permissive
    rbac = spec.rbac
    assert rbac is not None
    good = {"request.auth.principal": "me/alice", "request.auth.claims": {"groups": ["admin"]}}
    assert rbac.allowed(None, "GET", "/", 8080, {}, good)[0]
    assert not rbac.allowed(None, "GET", "/", 8080, {}, None)[0]
    other = {**good, "request.auth.claims": {"groups": "users"}}
    assert not rbac.allowed(None, "GET", "/", 8080, {}, other)[0]


def test_permissive_compiles_to_one_permissive_listener() -> None:
    spec = compile_listener(listener(permissive=True))
    assert spec.tls is not None and spec.tls.permissive
    assert len(spec.request_filters) == 2


def test_request_filter_after_rbac_is_refused() -> None:
    with pytest.raises(CompileError, match="must come before the rbac filters"):
        compile_listener(listener(order="after-rbac"))


def test_chains_that_differ_are_refused() -> None:
    lst = listener(permissive=True)
    del lst.filter_chains[1].filters[:]  # type: ignore[attr-defined]
    lst.filter_chains[1].filters.add().CopyFrom(  # type: ignore[attr-defined]
        listener().filter_chains[0].filters[0])  # type: ignore[attr-defined]
    hcm = hcm_pb2.HttpConnectionManager()
    lst.filter_chains[1].filters[0].typed_config.Unpack(hcm)  # type: ignore[attr-defined]
    del hcm.http_filters[0]
    lst.filter_chains[1].filters[0].typed_config.CopyFrom(pack(hcm))  # type: ignore[attr-defined]
    with pytest.raises(CompileError, match="same filters"):
        compile_listener(lst)


def test_request_filters_are_inbound_only() -> None:
    lst = outbound_http_listener(15001, fault=False)
    hcm = hcm_pb2.HttpConnectionManager()
    lst.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    ra = load_text(DOCS, "t.yaml")[0]
    hcm.http_filters.insert(0, jwt_t.for_workload([ra], "shop", {}, {}))
    lst.filter_chains[0].filters[0].typed_config.CopyFrom(pack(hcm))
    with pytest.raises(CompileError, match="inbound listeners"):
        compile_listener(lst)
