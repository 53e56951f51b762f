"""`networking.istio.io` VirtualService: HTTP and TCP routing rules for one or more hosts."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, PlainValidator, field_validator, model_validator

from hyphal.config.models.base import (
    Duration,
    ExportTo,
    Labels,
    Model,
    Percent,
    PortNumber,
    ResourceModel,
    Weight,
    exactly_one,
    fail,
    int_range,
)

__all__ = [
    "NETWORKING_API_VERSIONS",
    "Destination",
    "FaultAbort",
    "FaultDelay",
    "HTTPFaultInjection",
    "HTTPMatchRequest",
    "HTTPMirrorPolicy",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPRoute",
    "HTTPRouteDestination",
    "HeaderOperations",
    "Headers",
    "L4MatchAttributes",
    "Percentage",
    "PortSelector",
    "RouteDestination",
    "StringMatch",
    "TCPRoute",
    "VirtualService",
    "VirtualServiceSpec",
]

NETWORKING_API_VERSIONS = (
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
)


class StringMatch(Model):
    """Exactly one of exact, prefix, regex (RE2 syntax, as Envoy uses)."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> StringMatch:
        exactly_one(self, ("exact", "prefix", "regex"))
        return self

    @property
    def kind(self) -> Literal["exact", "prefix", "regex"]:
        if self.exact is not None:
            return "exact"
        if self.prefix is not None:
            return "prefix"
        return "regex"

    @property
    def value(self) -> str:
        return next(v for v in (self.exact, self.prefix, self.regex) if v is not None)


class PortSelector(Model):
    number: PortNumber


class Destination(Model):
    """host (short name, name.namespace, FQDN or ServiceEntry host), subset, port."""

    host: str = Field(min_length=1)
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(Model):
    set_: dict[str, str] = Field(default_factory=dict, alias="set")
    add: dict[str, str] = Field(default_factory=dict)
    remove: tuple[str, ...] = ()


class Headers(Model):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPMatchRequest(Model):
    """All conditions in one match must hold; any match of a route's list selects it."""

    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    port: PortNumber | None = None
    source_labels: Labels = Field(default_factory=dict)


class HTTPRouteDestination(Model):
    destination: Destination
    weight: Weight | None = None
    headers: Headers | None = None

    @property
    def effective_weight(self) -> int:
        """The weight, or 100 when unset (a lone destination)."""
        return 100 if self.weight is None else self.weight


class HTTPRedirect(Model):
    uri: str | None = None
    authority: str | None = None
    port: PortNumber | None = None
    scheme: str | None = None
    redirect_code: Annotated[int, PlainValidator(int_range(300, 399))] = 301


class HTTPRewrite(Model):
    uri: str | None = None
    authority: str | None = None


class HTTPRetry(Model):
    """retryOn is Envoy's comma-separated list (see `retry_on_list`)."""

    attempts: Annotated[int, PlainValidator(int_range(0, 100))]
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None

    @property
    def retry_on_list(self) -> tuple[str, ...]:
        if self.retry_on is None:
            return ()
        return tuple(p.strip() for p in self.retry_on.split(",") if p.strip())


class Percentage(Model):
    value: Percent


class FaultDelay(Model):
    fixed_delay: Duration
    percentage: Percentage | None = None
    percent: Weight | None = None

    @model_validator(mode="after")
    def _pct(self) -> FaultDelay:
        exactly_one(self, ("percentage", "percent"), at_most=True)
        return self

    @property
    def fraction_percent(self) -> float:
        """The share of requests delayed, 0..100 (100 when unset, as in Istio)."""
        if self.percentage is not None:
            return self.percentage.value
        return 100.0 if self.percent is None else float(self.percent)


class FaultAbort(Model):
    http_status: Annotated[int, PlainValidator(int_range(200, 599))] | None = None
    grpc_status: str | None = None
    percentage: Percentage | None = None

    @model_validator(mode="after")
    def _one(self) -> FaultAbort:
        exactly_one(self, ("http_status", "grpc_status"))
        return self

    @property
    def fraction_percent(self) -> float:
        return 100.0 if self.percentage is None else self.percentage.value


class HTTPFaultInjection(Model):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _some(self) -> HTTPFaultInjection:
        if self.delay is None and self.abort is None:
            raise fail("set delay, abort or both")
        return self


class HTTPMirrorPolicy(Model):
    destination: Destination
    percentage: Percentage | None = None


def check_weights(routes: tuple[HTTPRouteDestination, ...] | tuple[RouteDestination, ...]) -> None:
    if len(routes) > 1:
        total = sum(r.weight or 0 for r in routes)
        if total != 100:
            raise fail(f"weights must sum to 100 (got {total})")


class HTTPRoute(Model):
    name: str | None = None
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: tuple[HTTPMirrorPolicy, ...] = ()
    mirror_percentage: Percentage | None = None
    headers: Headers | None = None

    @field_validator("route")
    @classmethod
    def _weights(cls, route: tuple[HTTPRouteDestination, ...]) -> tuple[HTTPRouteDestination, ...]:
        check_weights(route)
        return route

    @model_validator(mode="after")
    def _target(self) -> HTTPRoute:
        if self.route and self.redirect is not None:
            raise fail("set route or redirect, not both")
        if not self.route and self.redirect is None:
            raise fail("set route (destinations) or redirect")
        if self.mirror is not None and self.mirrors:
            raise fail("set mirror or mirrors, not both")
        return self


class L4MatchAttributes(Model):
    port: PortNumber | None = None
    source_labels: Labels = Field(default_factory=dict)


class RouteDestination(Model):
    destination: Destination
    weight: Weight | None = None

    @property
    def effective_weight(self) -> int:
        return 100 if self.weight is None else self.weight


class TCPRoute(Model):
    match: tuple[L4MatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = Field(min_length=1)

    @field_validator("route")
    @classmethod
    def _weights(cls, route: tuple[RouteDestination, ...]) -> tuple[RouteDestination, ...]:
        check_weights(route)
        return route


def _gateway(value: object) -> str:
    if value != "mesh":
        raise fail(f'gateway {value!r} is not supported by hyphal: only "mesh" (the sidecars) is')
    return "mesh"


Gateway = Annotated[str, BeforeValidator(_gateway)]


class VirtualServiceSpec(Model):
    hosts: tuple[str, ...] = Field(min_length=1)
    gateways: tuple[Gateway, ...] = ()
    export_to: ExportTo = ()
    http: tuple[HTTPRoute, ...] = ()
    tcp: tuple[TCPRoute, ...] = ()

    @model_validator(mode="after")
    def _some(self) -> VirtualServiceSpec:
        if not self.http and not self.tcp:
            raise fail("set http or tcp routes")
        return self


class VirtualService(ResourceModel):
    KIND: ClassVar[str] = "VirtualService"
    API_VERSIONS: ClassVar[tuple[str, ...]] = NETWORKING_API_VERSIONS
    kind: Literal["VirtualService"] = "VirtualService"
    spec: VirtualServiceSpec
