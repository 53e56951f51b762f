"""`gateway.networking.k8s.io` GRPCRoute attached to a Service (GAMMA, mesh only).

The HTTPRoute models in `hyphal.config.models.gateway_api` hold what both kinds share
(parents, backends, header filters, mirrors) and re-export these names.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PlainValidator, field_validator, model_validator

from hyphal.config.models.base import Model, ResourceModel, choice, fail
from hyphal.config.models.gateway_api import (
    _UNSUPPORTED_HINT,
    GRPCROUTE_API_VERSIONS,
    BackendObjectReference,
    BackendWeight,
    HTTPHeaderFilter,
    HTTPHeaderMatch,
    HTTPRequestMirrorFilter,
    Loc,
    MatchType,
    ParentReference,
    _backend_filters,
    _check_union,
    _header_regexes,
    _no_hostnames,
    _references,
    _session_persistence,
    first_of_each,
    not_repeated,
    some_weight,
)

__all__ = [
    "GRPCBackendRef",
    "GRPCHeaderMatch",
    "GRPCMethodMatch",
    "GRPCRouteFilter",
    "GRPCRouteMatch",
    "GRPCRouteRule",
    "GRPCRouteSpec",
    "GatewayGRPCRoute",
]

_GRPC_SERVICE = re.compile(r"^\.?[a-zA-Z_][a-zA-Z_0-9]*(\.[a-zA-Z_][a-zA-Z_0-9]*)*$")
_GRPC_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")


class GRPCMethodMatch(Model):
    """Exact: `service` and/or `method` as written; RegularExpression: each is a regex."""

    type: MatchType = "Exact"
    service: str | None = Field(default=None, max_length=1024)
    method: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="after")
    def _some(self) -> GRPCMethodMatch:
        if not self.service and not self.method:
            raise fail("one or both of service or method must be specified")
        if self.type == "Exact":
            if self.service and not _GRPC_SERVICE.match(self.service):
                raise fail(f"service {self.service!r} is not a gRPC service name (pkg.Service)")
            if self.method and not _GRPC_METHOD.match(self.method):
                raise fail(f"method {self.method!r} is not a gRPC method name")
        return self


class GRPCHeaderMatch(HTTPHeaderMatch):
    """Same fields and rules as an HTTPRoute header match."""


class GRPCRouteMatch(Model):
    method: GRPCMethodMatch | None = None
    headers: tuple[GRPCHeaderMatch, ...] = ()

    @property
    def unique_headers(self) -> tuple[GRPCHeaderMatch, ...]:
        return first_of_each(self.headers, lambda h: h.name.lower())


_GRPC_FILTER_FIELDS = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestMirror": "request_mirror",
}


class GRPCRouteFilter(Model):
    type: Annotated[
        str, choice(tuple(_GRPC_FILTER_FIELDS), ("ExtensionRef",), hint=_UNSUPPORTED_HINT)
    ]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    extension_ref: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _union(self) -> GRPCRouteFilter:
        _check_union(self, self.type, _GRPC_FILTER_FIELDS)
        return self


class GRPCBackendRef(BackendObjectReference):
    weight: BackendWeight = 1
    filters: tuple[GRPCRouteFilter, ...] = ()

    @field_validator("filters")
    @classmethod
    def _only_headers(cls, filters: tuple[GRPCRouteFilter, ...]) -> tuple[GRPCRouteFilter, ...]:
        _backend_filters(filters)
        return filters


class GRPCRouteRule(Model):
    name: str | None = None
    matches: tuple[GRPCRouteMatch, ...] = ()
    filters: tuple[GRPCRouteFilter, ...] = ()
    backend_refs: tuple[GRPCBackendRef, ...] = Field(min_length=1)
    session_persistence: Annotated[Any, PlainValidator(_session_persistence)] = None

    @model_validator(mode="after")
    def _coherent(self) -> GRPCRouteRule:
        not_repeated(Counter(f.type for f in self.filters))
        some_weight(self.backend_refs)
        return self


class GRPCRouteSpec(Model):
    parent_refs: tuple[ParentReference, ...] = Field(min_length=1)
    hostnames: Annotated[tuple[str, ...], PlainValidator(_no_hostnames)] = ()
    rules: tuple[GRPCRouteRule, ...] = Field(min_length=1)


class GatewayGRPCRoute(ResourceModel):
    """Gateway API GRPCRoute (kind `GRPCRoute`) attached to a Service."""

    KIND: ClassVar[str] = "GRPCRoute"
    API_VERSIONS: ClassVar[tuple[str, ...]] = GRPCROUTE_API_VERSIONS
    kind: Literal["GRPCRoute"] = "GRPCRoute"
    spec: GRPCRouteSpec

    def backend_references(self) -> list[tuple[Loc, BackendObjectReference]]:
        """Every Service reference (backendRefs and mirror targets), with its field path."""
        return _references(self.spec.rules)

    def regexes(self) -> list[tuple[Loc, str]]:
        """Every RegularExpression value, with its field path (for an RE2 check)."""
        out: list[tuple[Loc, str]] = []
        for j, rule in enumerate(self.spec.rules):
            for k, m in enumerate(rule.matches):
                loc: Loc = ("spec", "rules", j, "matches", k)
                if m.method is not None and m.method.type == "RegularExpression":
                    out += [
                        ((*loc, "method", part), value)
                        for part, value in (("service", m.method.service),
                                            ("method", m.method.method))
                        if value
                    ]  # fmt: skip
                out += _header_regexes(loc, m.headers)
        return out
