"""`gateway.networking.k8s.io` HTTPRoute attached to a Service (GAMMA, mesh only), and the
pieces GRPCRoute (`hyphal.config.models.gateway_grpc`, re-exported here) shares with it.

Field names and defaults follow the Gateway API spec (v1). What hyphal cannot honour for mesh
traffic (hostnames, Gateway parents, ExtensionRef/CORS/ExternalAuth filters,
sessionPersistence) is refused with an error that says so, never ignored. Checks that need
other resources (does the Service exist, has it that port) live in `hyphal.config.validate`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import Field, PlainValidator, field_validator, model_validator

from hyphal.config.models.base import (
    Duration,
    Model,
    PortNumber,
    ResourceModel,
    choice,
    fail,
    int_range,
)

if TYPE_CHECKING:
    from hyphal.config.models.gateway_grpc import GRPCBackendRef, GRPCRouteFilter, GRPCRouteRule

__all__ = [
    "GATEWAY_GROUP",
    "GRPCROUTE_API_VERSIONS",
    "HTTPROUTE_API_VERSIONS",
    "BackendObjectReference",
    "Fraction",
    "GRPCBackendRef",
    "GRPCHeaderMatch",
    "GRPCMethodMatch",
    "GRPCRouteFilter",
    "GRPCRouteMatch",
    "GRPCRouteRule",
    "GRPCRouteSpec",
    "GatewayGRPCRoute",
    "GatewayHTTPRoute",
    "HTTPBackendRef",
    "HTTPHeader",
    "HTTPHeaderFilter",
    "HTTPHeaderMatch",
    "HTTPPathMatch",
    "HTTPPathModifier",
    "HTTPQueryParamMatch",
    "HTTPRequestMirrorFilter",
    "HTTPRequestRedirectFilter",
    "HTTPRouteFilter",
    "HTTPRouteMatch",
    "HTTPRouteRetry",
    "HTTPRouteRule",
    "HTTPRouteSpec",
    "HTTPRouteTimeouts",
    "HTTPURLRewriteFilter",
    "ParentReference",
]

GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTPROUTE_API_VERSIONS = (f"{GATEWAY_GROUP}/v1", f"{GATEWAY_GROUP}/v1beta1")
GRPCROUTE_API_VERSIONS: tuple[str, ...] = (f"{GATEWAY_GROUP}/v1", f"{GATEWAY_GROUP}/v1alpha2")

# A Service is a core (group "") object; hyphal's own Service kind lives in hyphal.dev.
SERVICE_GROUPS = ("", "core", "hyphal.dev")
_GROUP_HINT = 'write group: "" (core) or hyphal.dev'

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$")
_UNSUPPORTED_FILTERS = ("ExtensionRef", "CORS", "ExternalAuth")


def _header_name(value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.match(value):
        raise fail(f"{value!r} is not a valid HTTP header name")
    return value


HeaderName = Annotated[str, PlainValidator(_header_name)]
BackendWeight = Annotated[int, PlainValidator(int_range(0, 1_000_000))]
MatchType = Annotated[Literal["Exact", "RegularExpression"], choice(("Exact", "RegularExpression"))]


def _group(value: Any) -> str:
    if value not in SERVICE_GROUPS:
        raise fail(f"group {value!r} is not supported: hyphal routes to Services; {_GROUP_HINT}")
    return str(value)


ServiceGroup = Annotated[str, PlainValidator(_group)]


def _service_kind(value: Any) -> str:
    if value != "Service":
        raise fail(f"kind {value!r} is not supported: hyphal routes to Services (kind: Service)")
    return "Service"


ServiceKind = Annotated[str, PlainValidator(_service_kind)]


def _parent_group(value: Any) -> str:
    if value is None:
        raise fail(
            f"required for a Service parent (the spec's default group is {GATEWAY_GROUP}); "
            + _GROUP_HINT
        )
    return _group(value)


def _parent_kind(value: Any) -> str:
    if value is None:
        raise fail(
            "required: the spec's default parent is a Gateway, which hyphal does not implement; "
            'write kind: Service (and group: "")'
        )
    if value != "Service":
        raise fail(
            f"parent kind {value!r} is not supported: hyphal implements the Gateway API for "
            "the mesh only (GAMMA); attach the route to a Service (kind: Service)"
        )
    return "Service"


class ParentReference(Model):
    """`parentRefs[]`: the Service (GAMMA) whose traffic the route configures."""

    group: Annotated[str, PlainValidator(_parent_group)] = Field(
        default=None, validate_default=True
    )
    kind: Annotated[str, PlainValidator(_parent_kind)] = Field(default=None, validate_default=True)
    namespace: str | None = None
    name: str = Field(min_length=1)
    section_name: str | None = None
    port: PortNumber | None = None


class BackendObjectReference(Model):
    """A Service by name (same namespace unless `namespace`), and the port to call."""

    group: ServiceGroup = ""
    kind: ServiceKind = "Service"
    name: str = Field(min_length=1)
    namespace: str | None = None
    port: PortNumber


class HTTPHeader(Model):
    name: HeaderName
    value: str


class HTTPHeaderFilter(Model):
    """Request/ResponseHeaderModifier: set (overwrite), add (append), remove."""

    set_: tuple[HTTPHeader, ...] = Field(default=(), alias="set")
    add: tuple[HTTPHeader, ...] = ()
    remove: tuple[HeaderName, ...] = ()

    @model_validator(mode="after")
    def _one_action_per_header(self) -> HTTPHeaderFilter:
        names = [h.name.lower() for h in (*self.set_, *self.add)] + [r.lower() for r in self.remove]
        twice = sorted(n for n, c in Counter(names).items() if c > 1)
        if twice:
            raise fail(
                f"header {twice[0]!r} is named more than once across set, add and remove "
                "(one action per header name)"
            )
        return self

    def as_dicts(self) -> tuple[dict[str, str], dict[str, str], tuple[str, ...]]:
        """(set, add, remove) with lower-case names."""
        return (
            {h.name.lower(): h.value for h in self.set_},
            {h.name.lower(): h.value for h in self.add},
            tuple(r.lower() for r in self.remove),
        )


class HTTPPathModifier(Model):
    """`type: ReplaceFullPath` with replaceFullPath, or `ReplacePrefixMatch` with
    replacePrefixMatch (only with a single PathPrefix match)."""

    type: Annotated[
        Literal["ReplaceFullPath", "ReplacePrefixMatch"],
        choice(("ReplaceFullPath", "ReplacePrefixMatch")),
    ]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> HTTPPathModifier:
        full, prefix = self.replace_full_path is not None, self.replace_prefix_match is not None
        if self.type == "ReplaceFullPath" and (not full or prefix):
            raise fail("type ReplaceFullPath takes replaceFullPath (and not replacePrefixMatch)")
        if self.type == "ReplacePrefixMatch" and (not prefix or full):
            raise fail("type ReplacePrefixMatch takes replacePrefixMatch (and not replaceFullPath)")
        return self


def _status_code(value: Any) -> int:
    if isinstance(value, bool) or value not in (301, 302, 303, 307, 308):
        raise fail(f"must be one of 301, 302, 303, 307, 308 (got {value!r})")
    return int(value)


class HTTPRequestRedirectFilter(Model):
    scheme: Annotated[Literal["http", "https"], choice(("http", "https"))] | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: PortNumber | None = None
    status_code: Annotated[int, PlainValidator(_status_code)] = 302


class HTTPURLRewriteFilter(Model):
    hostname: str | None = None
    path: HTTPPathModifier | None = None

    @model_validator(mode="after")
    def _some(self) -> HTTPURLRewriteFilter:
        if self.hostname is None and self.path is None:
            raise fail("set hostname, path or both")
        return self


class Fraction(Model):
    numerator: Annotated[int, PlainValidator(int_range(0, 2**31 - 1))]
    denominator: Annotated[int, PlainValidator(int_range(1, 2**31 - 1))] = 100

    @model_validator(mode="after")
    def _at_most_one(self) -> Fraction:
        if self.numerator > self.denominator:
            raise fail("numerator must be less than or equal to denominator")
        return self

    @property
    def percent(self) -> float:
        return 100.0 * self.numerator / self.denominator


class HTTPRequestMirrorFilter(Model):
    """Copy requests to backendRef (responses ignored): percent or fraction, 100% if neither."""

    backend_ref: BackendObjectReference
    percent: Annotated[int, PlainValidator(int_range(0, 100))] | None = None
    fraction: Fraction | None = None

    @model_validator(mode="after")
    def _one(self) -> HTTPRequestMirrorFilter:
        if self.percent is not None and self.fraction is not None:
            raise fail("set percent or fraction, not both")
        return self

    @property
    def mirror_percent(self) -> float:
        if self.fraction is not None:
            return self.fraction.percent
        return 100.0 if self.percent is None else float(self.percent)


_FILTER_FIELDS = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestMirror": "request_mirror",
    "RequestRedirect": "request_redirect",
    "URLRewrite": "url_rewrite",
}
_UNSUPPORTED_HINT = "hyphal has no filter extensions; use the built-in filter types"


def _check_union(model: Model, type_: str, fields: dict[str, str]) -> None:
    """The field named by `type` is set, and no other filter field is (the spec's union)."""
    model_fields = type(model).model_fields
    own = fields[type_]
    if getattr(model, own) is None:
        raise fail(f"{model_fields[own].alias} is required when type is {type_}")
    for name in (*fields.values(), "extension_ref", "cors", "external_auth"):
        if name != own and name in model_fields and getattr(model, name) is not None:
            raise fail(f"{model_fields[name].alias} must not be set when type is {type_}")


class HTTPRouteFilter(Model):
    """One filter: `type` names which of the other fields holds its config."""

    type: Annotated[
        str, choice(tuple(_FILTER_FIELDS), _UNSUPPORTED_FILTERS, hint=_UNSUPPORTED_HINT)
    ]
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = None
    extension_ref: dict[str, Any] | None = None
    cors: dict[str, Any] | None = None
    external_auth: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _union(self) -> HTTPRouteFilter:
        _check_union(self, self.type, _FILTER_FIELDS)
        return self


def _backend_filters(filters: tuple[HTTPRouteFilter | GRPCRouteFilter, ...]) -> None:
    for f in filters:
        if f.type != "RequestHeaderModifier":
            raise fail(
                f"a {f.type} filter on a backendRef is not supported by hyphal (only "
                "RequestHeaderModifier); put it in the rule's filters"
            )


class HTTPBackendRef(BackendObjectReference):
    """A backend Service and its relative weight (not a percentage; default 1, 0 = no traffic)."""

    weight: BackendWeight = 1
    filters: tuple[HTTPRouteFilter, ...] = ()

    @field_validator("filters")
    @classmethod
    def _only_headers(cls, filters: tuple[HTTPRouteFilter, ...]) -> tuple[HTTPRouteFilter, ...]:
        _backend_filters(filters)
        return filters


class HTTPPathMatch(Model):
    type: Annotated[
        Literal["Exact", "PathPrefix", "RegularExpression"],
        choice(("Exact", "PathPrefix", "RegularExpression")),
    ] = "PathPrefix"
    value: str = Field(default="/", max_length=1024)

    @model_validator(mode="after")
    def _syntax(self) -> HTTPPathMatch:
        if self.type == "RegularExpression":
            return self
        v = self.value
        if not v.startswith("/"):
            raise fail(f"value {v!r} must be an absolute path starting with '/'")
        for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
            if bad in v:
                raise fail(f"value {v!r} must not contain {bad!r}")
        if v.endswith(("/..", "/.")):
            raise fail(f"value {v!r} must not end with '/.' or '/..'")
        if not _PATH_CHARS.match(v):
            raise fail(f"value {v!r} has characters not allowed in a path")
        return self


class HTTPHeaderMatch(Model):
    type: MatchType = "Exact"
    name: HeaderName
    value: str = Field(min_length=1, max_length=4096)


class HTTPQueryParamMatch(Model):
    type: MatchType = "Exact"
    name: str = Field(min_length=1)
    value: str = Field(min_length=1, max_length=1024)


_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


_T = TypeVar("_T")


def first_of_each(items: Sequence[_T], key: Callable[[_T], str]) -> tuple[_T, ...]:
    """`items` without those whose `key` an earlier one had (repeated names: first counts)."""
    seen: set[str] = set()
    out = []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            out.append(item)
    return tuple(out)


def not_repeated(counts: Counter[str], *types: str) -> None:
    """Each of the header modifier filters and `types` at most once in a rule."""
    for t in ("RequestHeaderModifier", "ResponseHeaderModifier", *types):
        if counts[t] > 1:
            raise fail(f"{t} filter cannot be repeated")


def some_weight(backend_refs: Sequence[HTTPBackendRef | GRPCBackendRef]) -> None:
    """At least one backendRef takes traffic (if there are any)."""
    if backend_refs and all(b.weight == 0 for b in backend_refs):
        raise fail(
            "every backendRef has weight 0: give at least one a weight above 0 "
            "(weights are relative, like 90 and 10)"
        )


class HTTPRouteMatch(Model):
    """All conditions must hold. Repeated header/query names: only the first counts (spec)."""

    path: HTTPPathMatch | None = None
    headers: tuple[HTTPHeaderMatch, ...] = ()
    query_params: tuple[HTTPQueryParamMatch, ...] = ()
    method: Annotated[str, choice(_METHODS)] | None = None

    @property
    def effective_path(self) -> HTTPPathMatch:
        return self.path if self.path is not None else HTTPPathMatch()

    @property
    def unique_headers(self) -> tuple[HTTPHeaderMatch, ...]:
        return first_of_each(self.headers, lambda h: h.name.lower())

    @property
    def unique_query_params(self) -> tuple[HTTPQueryParamMatch, ...]:
        return first_of_each(self.query_params, lambda q: q.name)


class HTTPRouteTimeouts(Model):
    """request: the whole exchange, retries included; backendRequest: each try. 0s = none."""

    request: Duration | None = None
    backend_request: Duration | None = None

    @model_validator(mode="after")
    def _order(self) -> HTTPRouteTimeouts:
        r, b = self.request, self.backend_request
        if r is not None and b is not None and r != timedelta(0) and b > r:
            raise fail("backendRequest timeout cannot be longer than request timeout")
        return self


class HTTPRouteRetry(Model):
    """Retry on connection errors and on `codes`, at most `attempts` times, `backoff` apart."""

    codes: tuple[Annotated[int, PlainValidator(int_range(400, 599))], ...] = ()
    attempts: Annotated[int, PlainValidator(int_range(0, 100))] | None = None
    backoff: Duration | None = None

    @field_validator("backoff")
    @classmethod
    def _positive(cls, backoff: timedelta) -> timedelta:
        if backoff <= timedelta(0):
            raise fail("must be more than 0s (leave backoff out for the default)")
        return backoff


def _session_persistence(value: Any) -> Any:
    if value is not None:
        raise fail(
            "not supported by hyphal for mesh routes (GAMMA); for sticky sessions use a "
            "DestinationRule with consistentHash on the backend Service"
        )
    return value


def _replace_prefix_needs_one_prefix_match(
    filters: tuple[HTTPRouteFilter, ...], matches: tuple[HTTPRouteMatch, ...]
) -> None:
    for f in filters:
        mod = f.url_rewrite or f.request_redirect
        if mod is None or mod.path is None or mod.path.type != "ReplacePrefixMatch":
            continue
        if len(matches) != 1 or matches[0].effective_path.type != "PathPrefix":
            raise fail(
                f"when using {f.type} with path.replacePrefixMatch, exactly one PathPrefix "
                "match must be specified"
            )


class HTTPRouteRule(Model):
    """Matches (any one selects the rule; none = every request), filters, weighted backends."""

    name: str | None = None
    matches: tuple[HTTPRouteMatch, ...] = ()
    filters: tuple[HTTPRouteFilter, ...] = ()
    backend_refs: tuple[HTTPBackendRef, ...] = ()
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None
    session_persistence: Annotated[Any, PlainValidator(_session_persistence)] = None

    @model_validator(mode="after")
    def _coherent(self) -> HTTPRouteRule:
        counts = Counter(f.type for f in self.filters)
        not_repeated(counts, "RequestRedirect", "URLRewrite")
        if counts["RequestRedirect"] and counts["URLRewrite"]:
            raise fail("set a RequestRedirect or a URLRewrite filter, not both")
        if counts["RequestRedirect"] and self.backend_refs:
            raise fail("RequestRedirect filter must not be used together with backendRefs")
        if not counts["RequestRedirect"] and not self.backend_refs:
            raise fail(
                "set backendRefs (or a RequestRedirect filter): a rule with neither would "
                "answer every request with 500"
            )
        some_weight(self.backend_refs)
        _replace_prefix_needs_one_prefix_match(self.filters, self.matches)
        return self

    @property
    def redirect(self) -> HTTPRequestRedirectFilter | None:
        return next((f.request_redirect for f in self.filters if f.request_redirect), None)

    @property
    def rewrite(self) -> HTTPURLRewriteFilter | None:
        return next((f.url_rewrite for f in self.filters if f.url_rewrite), None)


def _no_hostnames(value: Any) -> tuple[str, ...]:
    if value:
        raise fail(
            "not supported for mesh routes (GAMMA): a route attached to a Service applies to "
            "every name of that Service; remove hostnames"
        )
    return ()


class HTTPRouteSpec(Model):
    parent_refs: tuple[ParentReference, ...] = Field(min_length=1)
    hostnames: Annotated[tuple[str, ...], PlainValidator(_no_hostnames)] = ()
    rules: tuple[HTTPRouteRule, ...] = Field(min_length=1)


Loc = tuple[int | str, ...]


def _references(
    rules: Sequence[HTTPRouteRule | GRPCRouteRule],
) -> list[tuple[Loc, BackendObjectReference]]:
    out: list[tuple[Loc, BackendObjectReference]] = []
    for j, rule in enumerate(rules):
        base: Loc = ("spec", "rules", j)
        refs: Sequence[BackendObjectReference] = rule.backend_refs
        filters: Sequence[HTTPRouteFilter | GRPCRouteFilter] = rule.filters
        out += [((*base, "backendRefs", k), b) for k, b in enumerate(refs)]
        out += [
            ((*base, "filters", k, "requestMirror", "backendRef"), f.request_mirror.backend_ref)
            for k, f in enumerate(filters)
            if f.request_mirror is not None
        ]
    return out


def _header_regexes(
    loc: Loc, headers: Sequence[HTTPHeaderMatch | GRPCHeaderMatch]
) -> list[tuple[Loc, str]]:
    return [
        ((*loc, "headers", n, "value"), h.value)
        for n, h in enumerate(headers)
        if h.type == "RegularExpression"
    ]


class GatewayHTTPRoute(ResourceModel):
    """Gateway API HTTPRoute (kind `HTTPRoute`) attached to a Service."""

    KIND: ClassVar[str] = "HTTPRoute"
    API_VERSIONS: ClassVar[tuple[str, ...]] = HTTPROUTE_API_VERSIONS
    kind: Literal["HTTPRoute"] = "HTTPRoute"
    spec: HTTPRouteSpec

    def backend_references(self) -> list[tuple[Loc, BackendObjectReference]]:
        """Every Service reference (backendRefs and mirror targets), with its field path."""
        return _references(self.spec.rules)

    def regexes(self) -> list[tuple[Loc, str]]:
        """Every RegularExpression value, with its field path (for an RE2 check)."""
        out: list[tuple[Loc, str]] = []
        for j, rule in enumerate(self.spec.rules):
            for k, m in enumerate(rule.matches):
                loc: Loc = ("spec", "rules", j, "matches", k)
                if m.path is not None and m.path.type == "RegularExpression":
                    out.append(((*loc, "path", "value"), m.path.value))
                out += _header_regexes(loc, m.headers)
                out += [
                    ((*loc, "queryParams", n, "value"), q.value)
                    for n, q in enumerate(m.query_params)
                    if q.type == "RegularExpression"
                ]
        return out


# GRPCRoute lives in its own module (it builds on the pieces above); re-exported for callers
# that import every Gateway API model from here. Imported last: gateway_grpc imports this one.
from hyphal.config.models.gateway_grpc import (  # noqa: E402
    GatewayGRPCRoute,
    GRPCBackendRef,
    GRPCHeaderMatch,
    GRPCMethodMatch,
    GRPCRouteFilter,
    GRPCRouteMatch,
    GRPCRouteRule,
    GRPCRouteSpec,
)
