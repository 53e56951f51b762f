"""RateLimitPolicy, RequestAuthentication and request-auth AuthorizationPolicy fields: what
loads, and the exact error a user sees for what does not."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_helpers import BASE, check_dir, write

from hyphal.config.models import RateLimitPolicy, RequestAuthentication
from hyphal.config.models.security import AuthorizationPolicy

RL = """\
apiVersion: hyphal.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: product, namespace: shop}
spec:
"""
RA = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
"""
AP = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: policy, namespace: shop}
spec:
"""
JWKS = (
    '{"keys": [{"kty": "OKP", "crv": "Ed25519", '
    '"x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'
)


def test_full_rate_limit_policy_loads(tmp_path: Path) -> None:
    text = RL + (
        "  targetRef: {kind: Service, name: product}\n"
        "  total: {requestsPerSecond: 100, burst: 150}\n"
        "  identity: {requestsPerSecond: 20}\n"
        "  overrides:\n"
        "  - requestsPerSecond: 50\n"
        "    clientRefs: [{kind: ServiceAccount, name: cart}, {name: web, namespace: edge}]\n"
    )
    rs, errors = check_dir(write(tmp_path, {**BASE, "shop/rl.yaml": text}))
    assert errors == []
    assert rs is not None
    (rl,) = rs.rate_limit_policies
    assert isinstance(rl, RateLimitPolicy)
    assert rl.spec.total is not None and rl.spec.total.burst == 150
    assert rl.spec.identity is not None and rl.spec.identity.requests_per_second == 20
    assert [c.namespace for c in rl.spec.overrides[0].client_refs] == [None, "edge"]
    assert "kind: RateLimitPolicy" in rl.to_yaml()


def test_request_authentication_loads(tmp_path: Path) -> None:
    text = RA + (
        "  selector: {matchLabels: {app: product}}\n"
        "  jwtRules:\n"
        "  - issuer: https://issuer.example\n"
        "    audiences: [shop]\n"
        f"    jwks: '{JWKS}'\n"
        "    fromHeaders: [{name: x-jwt}, {name: authorization, prefix: 'Bearer '}]\n"
        "    fromParams: [token]\n"
        "    outputPayloadToHeader: x-jwt-payload\n"
        "    forwardOriginalToken: true\n"
        "  - issuer: other\n"
        "    jwksUri: http://127.0.0.1:8080/jwks.json\n"
    )
    rs, errors = check_dir(write(tmp_path, {**BASE, "shop/ra.yaml": text}))
    assert errors == []
    assert rs is not None
    (ra,) = rs.request_authentications
    assert isinstance(ra, RequestAuthentication)
    first, second = ra.spec.jwt_rules
    assert first.from_headers[1].prefix == "Bearer " and first.forward_original_token
    assert second.jwks_uri == "http://127.0.0.1:8080/jwks.json" and second.jwks is None


def test_request_principals_and_auth_conditions_load(tmp_path: Path) -> None:
    text = AP + (
        "  rules:\n"
        "  - from: [{source: {requestPrincipals: ['issuer/*'], notRequestPrincipals: [x/y]}}]\n"
        "    when:\n"
        "    - {key: request.auth.principal, values: ['issuer/alice']}\n"
        "    - {key: request.auth.audiences, values: [shop]}\n"
        "    - {key: 'request.auth.claims[groups]', values: [admin]}\n"
        "    - {key: 'request.auth.claims[org][team]', notValues: [red]}\n"
    )
    rs, errors = check_dir(write(tmp_path, {**BASE, "shop/ap.yaml": text}))
    assert errors == []
    assert rs is not None
    (ap,) = rs.authorization_policies
    assert isinstance(ap, AuthorizationPolicy)
    rule = ap.spec.rules[0]
    assert rule.from_[0].source.request_principals == ("issuer/*",)
    assert [c.claim_path for c in rule.when] == [None, None, ("groups",), ("org", "team")]
    assert all(c.http_only for c in rule.when)


CASES: list[tuple[str, str, str, list[str]]] = [
    (
        "rl-no-target",
        "shop/rl.yaml",
        RL + "  total: {requestsPerSecond: 5}\n",
        ["shop/rl.yaml#1: spec: set one of targetRef, selector"],
    ),
    (
        "rl-both-targets",
        "shop/rl.yaml",
        RL + "  targetRef: {kind: Service, name: product}\n  selector: {matchLabels: {a: b}}\n"
        "  total: {requestsPerSecond: 5}\n",
        ["shop/rl.yaml#1: spec: set only one of targetRef, selector (got targetRef, selector)"],
    ),
    (
        "rl-no-limit",
        "shop/rl.yaml",
        RL + "  targetRef: {kind: Service, name: product}\n",
        ["shop/rl.yaml#1: spec: set at least one of total, identity, overrides"],
    ),
    (
        "rl-zero-rate",
        "shop/rl.yaml",
        RL + "  targetRef: {kind: Service, name: product}\n  total: {requestsPerSecond: 0}\n",
        ["shop/rl.yaml#1: spec.total.requestsPerSecond: must be 1..1000000"],
    ),
    (
        "rl-target-kind",
        "shop/rl.yaml",
        RL + "  targetRef: {kind: Deployment, name: product}\n  total: {requestsPerSecond: 5}\n",
        [
            "shop/rl.yaml#1: spec.targetRef.kind: must be one of Service, Workload "
            "(got 'Deployment')"
        ],
    ),
    (
        "rl-missing-service",
        "shop/rl.yaml",
        RL + "  targetRef: {kind: Service, name: nope}\n  total: {requestsPerSecond: 5}\n",
        ['shop/rl.yaml#1: spec.targetRef.name: no Service "nope" in namespace "shop"'],
    ),
    (
        "rl-missing-workload",
        "shop/rl.yaml",
        RL + "  targetRef: {kind: Workload, name: nope}\n  identity: {requestsPerSecond: 5}\n",
        ['shop/rl.yaml#1: spec.targetRef.name: no Workload "nope" in namespace "shop"'],
    ),
    (
        "rl-descriptors",
        "shop/rl.yaml",
        RL + "  targetRef: {kind: Service, name: product}\n  descriptors: []\n",
        ["shop/rl.yaml#1: spec.descriptors: not supported by hyphal"],
    ),
    (
        "rl-empty-client-refs",
        "shop/rl.yaml",
        RL + "  targetRef: {kind: Service, name: product}\n"
        "  overrides: [{requestsPerSecond: 5, clientRefs: []}]\n",
        ["shop/rl.yaml#1: spec.overrides[0].clientRefs: must not be empty"],
    ),
    (
        "ra-no-keys",
        "shop/ra.yaml",
        RA + "  jwtRules: [{issuer: me}]\n",
        [
            "shop/ra.yaml#1: spec.jwtRules[0]: set one of jwks, jwksUri (OpenID discovery "
            "from the issuer is not supported by hyphal)"
        ],
    ),
    (
        "ra-both-keys",
        "shop/ra.yaml",
        RA + f"  jwtRules: [{{issuer: me, jwks: '{JWKS}', jwksUri: 'http://127.0.0.1/k'}}]\n",
        ["shop/ra.yaml#1: spec.jwtRules[0]: set only one of jwks, jwksUri (got jwks, jwksUri)"],
    ),
    (
        "ra-bad-json",
        "shop/ra.yaml",
        RA + "  jwtRules: [{issuer: me, jwks: '{nope'}]\n",
        [
            "shop/ra.yaml#1: spec.jwtRules[0].jwks: is not valid JSON: Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1)"
        ],
    ),
    (
        "ra-not-a-key-set",
        "shop/ra.yaml",
        RA + "  jwtRules: [{issuer: me, jwks: '[1]'}]\n",
        ['shop/ra.yaml#1: spec.jwtRules[0].jwks: must be a JSON Web Key Set: {"keys": [...]}'],
    ),
    (
        "ra-uri-scheme",
        "shop/ra.yaml",
        RA + "  jwtRules: [{issuer: me, jwksUri: 'file:///etc/keys'}]\n",
        ["shop/ra.yaml#1: spec.jwtRules[0].jwksUri: 'file:///etc/keys' is not an http:// or "
         "https:// URL"],
    ),
    (
        "ra-issuer-twice",
        "shop/ra.yaml",
        RA + f"  jwtRules: [{{issuer: me, jwks: '{JWKS}'}}, {{issuer: me, jwks: '{JWKS}'}}]\n",
        ["shop/ra.yaml#1: spec.jwtRules: issuer 'me' is listed twice"],
    ),
    (
        "ra-cookies",
        "shop/ra.yaml",
        RA + f"  jwtRules: [{{issuer: me, jwks: '{JWKS}', fromCookies: [session]}}]\n",
        ["shop/ra.yaml#1: spec.jwtRules[0].fromCookies: not supported by hyphal"],
    ),
    (
        "ap-claims-key-shape",
        "shop/ap.yaml",
        AP + "  rules:\n  - when: [{key: 'request.auth.claims', values: [x]}]\n",
        [
            "shop/ap.yaml#1: spec.rules[0].when[0].key: condition key 'request.auth.claims' is "
            "not supported by hyphal (supported: source.principal, source.namespace, "
            "request.headers[<name>], request.auth.principal, request.auth.audiences, "
            "request.auth.claims[<name>])"
        ],
    ),
]


@pytest.mark.parametrize(("name", "file", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_error(tmp_path: Path, name: str, file: str, text: str, expected: list[str]) -> None:
    write(tmp_path, {**BASE, file: text})
    _, errors = check_dir(tmp_path)
    assert errors == expected
