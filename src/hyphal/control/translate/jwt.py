"""RequestAuthentication -> Envoy `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`
for the inbound listeners of the workloads it selects.

Istio's semantics in Envoy's terms: every jwtRule is a provider with inline keys
(`local_jwks`: `jwksUri` is fetched by the control plane, see hyphal.control.jwks, never by
sidecars), and one rule for every path requiring any provider or `allow_missing` — a request
without a token passes; a token that fails is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2

from hyphal.config.models import RequestAuthentication
from hyphal.config.models.security import JWTRule
from hyphal.control.translate import naming
from hyphal.control.translate.pb import Message, hcm_pb2, pack

JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
EMPTY_JWKS = '{"keys": []}'  # a jwksUri not fetched yet: no key matches, tokens are refused
CLOCK_SKEW_SECONDS = 60


def selects(ra: RequestAuthentication, namespace: str, labels: Mapping[str, str]) -> bool:
    """As AuthorizationPolicy: own namespace (selector optional) or the root namespace."""
    if ra.namespace not in (namespace, naming.ROOT_NAMESPACE):
        return False
    sel = ra.spec.selector
    if sel is None or not sel.match_labels:
        return True
    return all(labels.get(k) == v for k, v in sel.match_labels.items())


def provider(rule: JWTRule, jwks: Mapping[str, str]) -> Message:
    """One jwtRule as a JwtProvider; `jwks` holds the fetched key sets by URI."""
    keys = rule.jwks if rule.jwks is not None else jwks.get(rule.jwks_uri or "", EMPTY_JWKS)
    p = jwt_pb2.JwtProvider(
        issuer=rule.issuer,
        audiences=list(rule.audiences),
        local_jwks=base_pb2.DataSource(inline_string=keys),
        forward=rule.forward_original_token,
        from_headers=[jwt_pb2.JwtHeader(name=h.name, value_prefix=h.prefix)
                      for h in rule.from_headers],
        from_params=list(rule.from_params),
        clock_skew_seconds=CLOCK_SKEW_SECONDS,
        payload_in_metadata=rule.issuer,
    )
    if rule.output_payload_to_header:
        p.forward_payload_header = rule.output_payload_to_header
    return p


def build_jwt_authn(policies: Iterable[RequestAuthentication],
                    jwks: Mapping[str, str]) -> Message | None:
    """The filter config for every rule of `policies` (None when they have no rules)."""
    auth = jwt_pb2.JwtAuthentication()
    names: list[str] = []
    for ra in sorted(policies, key=lambda r: (r.namespace, r.name)):
        for i, rule in enumerate(ra.spec.jwt_rules):
            name = f"{ra.namespace}/{ra.name}/{i}"
            auth.providers[name].CopyFrom(provider(rule, jwks))
            names.append(name)
    if not names:
        return None
    requires = jwt_pb2.JwtRequirement()
    for name in names:
        requires.requires_any.requirements.append(jwt_pb2.JwtRequirement(provider_name=name))
    missing = jwt_pb2.JwtRequirement()
    missing.allow_missing.SetInParent()
    requires.requires_any.requirements.append(missing)
    auth.rules.append(jwt_pb2.RequirementRule(
        match=route_components_pb2.RouteMatch(prefix="/"), requires=requires))
    return auth


def jwt_authn_filter(config: Message) -> Message:
    return hcm_pb2.HttpFilter(name=JWT_AUTHN_FILTER, typed_config=pack(config))


def for_workload(policies: Iterable[RequestAuthentication], namespace: str,
                 labels: Mapping[str, str], jwks: Mapping[str, str]) -> Message | None:
    selected = [ra for ra in policies if selects(ra, namespace, labels)]
    config = build_jwt_authn(selected, jwks)
    return jwt_authn_filter(config) if config is not None else None
