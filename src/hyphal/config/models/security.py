"""`security.istio.io` AuthorizationPolicy and PeerAuthentication: who may call, and mTLS mode."""

from __future__ import annotations

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
    "Operation",
    "PeerAuthentication",
    "PeerAuthenticationSpec",
    "PeerMTLS",
    "PeerSource",
    "Rule",
    "RuleFrom",
    "RuleTo",
    "WorkloadSelector",
]

SECURITY_API_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")
CONDITION_KEYS = ("source.principal", "source.namespace", "request.headers[<name>]")
_HEADER_KEY = re.compile(r"^request\.headers\[([^\[\]]+)\]$")


class WorkloadSelector(Model):
    match_labels: Labels = Field(default_factory=dict)


class PeerSource(Model):
    """`from[].source`: peer identity (SPIFFE principals without "spiffe://"), namespaces, IPs."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
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
    """`when[]`: key is source.principal, source.namespace or request.headers[<name>]."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        if key in ("source.principal", "source.namespace") or _HEADER_KEY.match(key):
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
