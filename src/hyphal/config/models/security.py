"""`security.istio.io` AuthorizationPolicy, PeerAuthentication and RequestAuthentication: who
may call, mTLS mode, and which JWTs are verified."""

from __future__ import annotations

import json
import re
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from hyphal.config.models.base import (
    Labels,
    Model,
    PortNumber,
    ResourceModel,
    choice,
    fail,
)

__all__ = [
    "CONDITION_KEYS",
    "SECURITY_API_VERSIONS",
    "AuthorizationPolicy",
    "AuthorizationPolicySpec",
    "Condition",
    "JWTHeader",
    "JWTRule",
    "Operation",
    "PeerAuthentication",
    "PeerAuthenticationSpec",
    "PeerMTLS",
    "PeerSource",
    "RequestAuthentication",
    "RequestAuthenticationSpec",
    "Rule",
    "RuleFrom",
    "RuleTo",
    "WorkloadSelector",
]

SECURITY_API_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")
CONDITION_KEYS = (
    "source.principal",
    "source.namespace",
    "request.headers[<name>]",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.claims[<name>]",
)
_HEADER_KEY = re.compile(r"^request\.headers\[([^\[\]]+)\]$")
_CLAIM_KEY = re.compile(r"^request\.auth\.claims((?:\[[^\[\]]+\])+)$")
_PLAIN_KEYS = frozenset(
    {"source.principal", "source.namespace", "request.auth.principal", "request.auth.audiences"}
)


class WorkloadSelector(Model):
    match_labels: Labels = Field(default_factory=dict)


class PeerSource(Model):
    """`from[].source`: peer identity (SPIFFE principals without "spiffe://"), namespaces, IPs."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()  # `<iss>/<sub>` of a verified JWT (globbed)
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()


class RuleFrom(Model):
    source: PeerSource


def _ports(value: object) -> object:
    # Istio writes ports as strings ("8080"); accept both.
    if isinstance(value, (list, tuple)):
        return [int(v) if isinstance(v, str) and v.isdigit() else v for v in value]
    return value


Ports = Annotated[tuple[PortNumber, ...], BeforeValidator(_ports)]


class Operation(Model):
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: Ports = ()
    not_ports: Ports = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


class RuleTo(Model):
    operation: Operation


class Condition(Model):
    """`when[]`: one of CONDITION_KEYS (`request.auth.*` need a RequestAuthentication)."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        if key in _PLAIN_KEYS or _HEADER_KEY.match(key) or _CLAIM_KEY.match(key):
            return key
        raise fail(
            f"condition key {key!r} is not supported by hyphal "
            f"(supported: {', '.join(CONDITION_KEYS)})"
        )

    @model_validator(mode="after")
    def _some(self) -> Condition:
        if not self.values and not self.not_values:
            raise fail("set values or notValues")
        return self

    @property
    def header_name(self) -> str | None:
        """For `request.headers[x]` keys: the header name, lower-cased."""
        m = _HEADER_KEY.match(self.key)
        return m.group(1).lower() if m else None

    @property
    def claim_path(self) -> tuple[str, ...] | None:
        """For `request.auth.claims[a][b]` keys: ("a", "b")."""
        m = _CLAIM_KEY.match(self.key)
        return tuple(m.group(1)[1:-1].split("][")) if m else None

    @property
    def http_only(self) -> bool:
        """Whether the key needs an HTTP request (headers or a JWT) to be checked."""
        return not self.key.startswith("source.")


class Rule(Model):
    """All of from/to/when must match; within each list, any entry."""

    from_: tuple[RuleFrom, ...] = Field(default=(), alias="from")
    to: tuple[RuleTo, ...] = ()
    when: tuple[Condition, ...] = ()


class AuthorizationPolicySpec(Model):
    """No rules with ALLOW denies everything selected; `rules: [{}]` allows everything."""

    selector: WorkloadSelector | None = None
    action: Annotated[
        Literal["ALLOW", "DENY"],
        choice(("ALLOW", "DENY"), ("AUDIT", "CUSTOM")),
    ] = "ALLOW"
    rules: tuple[Rule, ...] = ()


class AuthorizationPolicy(ResourceModel):
    KIND: ClassVar[str] = "AuthorizationPolicy"
    API_VERSIONS: ClassVar[tuple[str, ...]] = SECURITY_API_VERSIONS
    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    spec: AuthorizationPolicySpec = Field(default_factory=AuthorizationPolicySpec)


MTLSMode = Literal["STRICT", "PERMISSIVE", "DISABLE", "UNSET"]


class PeerMTLS(Model):
    mode: Annotated[MTLSMode, choice(("STRICT", "PERMISSIVE", "DISABLE", "UNSET"))] = "UNSET"


def _port_keys(value: object) -> object:
    if isinstance(value, dict):
        return {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in value.items()}
    return value


class PeerAuthenticationSpec(Model):
    selector: WorkloadSelector | None = None
    mtls: PeerMTLS | None = None
    port_level_mtls: Annotated[dict[PortNumber, PeerMTLS], BeforeValidator(_port_keys)] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _selector(self) -> PeerAuthenticationSpec:
        if self.port_level_mtls and (self.selector is None or not self.selector.match_labels):
            raise fail("portLevelMtls needs a selector (as in Istio)")
        return self


class PeerAuthentication(ResourceModel):
    KIND: ClassVar[str] = "PeerAuthentication"
    API_VERSIONS: ClassVar[tuple[str, ...]] = SECURITY_API_VERSIONS
    kind: Literal["PeerAuthentication"] = "PeerAuthentication"
    spec: PeerAuthenticationSpec = Field(default_factory=PeerAuthenticationSpec)


class JWTHeader(Model):
    """`fromHeaders[]`: where a token is carried, e.g. `{name: x-jwt}` or Authorization/Bearer."""

    name: str = Field(min_length=1)
    prefix: str = ""


def _jwks(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail("must be a JSON Web Key Set as a string (write it as a YAML block scalar)")
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise fail(f"is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("keys"), list):
        raise fail('must be a JSON Web Key Set: {"keys": [...]}')
    return value


class JWTRule(Model):
    """One accepted issuer: its keys (inline `jwks` or `jwksUri`), audiences, token locations."""

    issuer: str = Field(min_length=1)
    audiences: tuple[str, ...] = ()
    jwks: Annotated[str | None, BeforeValidator(_jwks)] = None
    jwks_uri: str | None = None
    from_headers: tuple[JWTHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    output_payload_to_header: str | None = None
    forward_original_token: bool = False

    @field_validator("jwks_uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        if uri is not None and not re.match(r"^https?://[^/\s]+", uri):
            raise fail(f"{uri!r} is not an http:// or https:// URL")
        return uri

    @model_validator(mode="after")
    def _keys(self) -> JWTRule:
        if self.jwks is not None and self.jwks_uri is not None:
            raise fail("set only one of jwks, jwksUri (got jwks, jwksUri)")
        if self.jwks is None and self.jwks_uri is None:
            raise fail(
                "set one of jwks, jwksUri (OpenID discovery from the issuer is not supported "
                "by hyphal)"
            )
        return self


class RequestAuthenticationSpec(Model):
    """Tokens present are verified (invalid -> 401); requests without one pass unauthenticated."""

    selector: WorkloadSelector | None = None
    jwt_rules: tuple[JWTRule, ...] = ()

    @field_validator("jwt_rules")
    @classmethod
    def _unique(cls, rules: tuple[JWTRule, ...]) -> tuple[JWTRule, ...]:
        seen: set[str] = set()
        for r in rules:
            if r.issuer in seen:
                raise fail(f"issuer {r.issuer!r} is listed twice")
            seen.add(r.issuer)
        return rules


class RequestAuthentication(ResourceModel):
    KIND: ClassVar[str] = "RequestAuthentication"
    API_VERSIONS: ClassVar[tuple[str, ...]] = SECURITY_API_VERSIONS
    kind: Literal["RequestAuthentication"] = "RequestAuthentication"
    spec: RequestAuthenticationSpec = Field(default_factory=RequestAuthenticationSpec)
