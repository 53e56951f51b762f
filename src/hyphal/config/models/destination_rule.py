"""`networking.istio.io` DestinationRule: traffic policy (balancing, pools, ejection, TLS).

And its subsets: named label sets, each of which may carry its own traffic policy.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import Field, PlainValidator, field_validator, model_validator

from hyphal.config.models.base import (
    Duration,
    ExportTo,
    Labels,
    Model,
    ResourceModel,
    choice,
    exactly_one,
    fail,
    int_range,
)
from hyphal.config.models.virtual_service import NETWORKING_API_VERSIONS, PortSelector

__all__ = [
    "LB_SIMPLE",
    "ClientTLSSettings",
    "ConnectionPoolSettings",
    "ConsistentHashLB",
    "DestinationRule",
    "DestinationRuleSpec",
    "HTTPCookie",
    "HTTPSettings",
    "HealthCheck",
    "LoadBalancerSettings",
    "Maglev",
    "OutlierDetection",
    "PortTrafficPolicy",
    "RingHash",
    "Subset",
    "TCPSettings",
    "TcpKeepalive",
    "TrafficPolicy",
]

Count = Annotated[int, PlainValidator(int_range(0, 2**31 - 1))]
PositiveCount = Annotated[int, PlainValidator(int_range(1, 2**31 - 1))]
Pct = Annotated[int, PlainValidator(int_range(0, 100))]

# PEAK_EWMA is a hyphal extension (Linkerd's default balancer), not an Istio value.
LB_SIMPLE = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH", "LEAST_CONN", "PEAK_EWMA")
SimpleLB = Literal[
    "ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH", "LEAST_CONN", "PEAK_EWMA"
]


class HTTPCookie(Model):
    name: str = Field(min_length=1)
    path: str | None = None
    ttl: Duration | None = None


class RingHash(Model):
    minimum_ring_size: PositiveCount | None = None


class Maglev(Model):
    table_size: PositiveCount | None = None


class ConsistentHashLB(Model):
    """Exactly one hash key; ringHash (default) or maglev as the table."""

    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: Literal[True] | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: Maglev | None = None
    minimum_ring_size: PositiveCount | None = None

    @model_validator(mode="after")
    def _one(self) -> ConsistentHashLB:
        exactly_one(
            self, ("http_header_name", "http_cookie", "use_source_ip", "http_query_parameter_name")
        )
        exactly_one(self, ("ring_hash", "maglev", "minimum_ring_size"), at_most=True)
        return self


class LoadBalancerSettings(Model):
    simple: Annotated[SimpleLB, choice(LB_SIMPLE, ("UNSPECIFIED",))] | None = None
    consistent_hash: ConsistentHashLB | None = None
    warmup_duration_secs: Duration | None = None

    @model_validator(mode="after")
    def _one(self) -> LoadBalancerSettings:
        exactly_one(self, ("simple", "consistent_hash"), at_most=True)
        return self


class TcpKeepalive(Model):
    probes: PositiveCount | None = None
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(Model):
    max_connections: PositiveCount | None = None
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    idle_timeout: Duration | None = None


class HTTPSettings(Model):
    http1_max_pending_requests: PositiveCount | None = None
    http2_max_requests: PositiveCount | None = None
    max_requests_per_connection: Count | None = None
    max_retries: Count | None = None
    idle_timeout: Duration | None = None
    h2_upgrade_policy: (
        Annotated[
            Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"],
            choice(("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE")),
        ]
        | None
    ) = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: PositiveCount | None = None


class ConnectionPoolSettings(Model):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Model):
    consecutive_5xx_errors: Count | None = Field(default=None, alias="consecutive5xxErrors")
    consecutive_gateway_errors: Count | None = None
    consecutive_local_origin_failures: Count | None = None
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: Pct | None = None
    min_health_percent: Pct | None = None
    split_external_local_origin_errors: bool | None = None


TLSMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


class ClientTLSSettings(Model):
    mode: Annotated[TLSMode, choice(("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"))]
    sni: str | None = None
    subject_alt_names: tuple[str, ...] = ()


class HealthCheck(Model):
    """hyphal extension: active health checking (HTTP GET `path`, or a TCP connect)."""

    path: str | None = None
    tcp: bool = False
    interval: Duration = timedelta(seconds=5)
    timeout: Duration = timedelta(seconds=1)
    unhealthy_threshold: PositiveCount = 3
    healthy_threshold: PositiveCount = 2

    @model_validator(mode="after")
    def _one(self) -> HealthCheck:
        if (self.path is None) == (not self.tcp):
            raise fail("set path (an HTTP GET check) or tcp: true (a connect check), not both")
        if self.path is not None and not self.path.startswith("/"):
            raise fail(f"path {self.path!r} must start with '/'")
        return self


class PortTrafficPolicy(Model):
    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    health_check: HealthCheck | None = None


class TrafficPolicy(Model):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()
    health_check: HealthCheck | None = None

    @field_validator("port_level_settings")
    @classmethod
    def _unique(cls, pls: tuple[PortTrafficPolicy, ...]) -> tuple[PortTrafficPolicy, ...]:
        seen: set[int] = set()
        for p in pls:
            if p.port.number in seen:
                raise fail(f"port {p.port.number} has two entries")
            seen.add(p.port.number)
        return pls


class Subset(Model):
    name: str = Field(min_length=1)
    labels: Labels = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Model):
    host: str = Field(min_length=1)
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    export_to: ExportTo = ()

    @field_validator("subsets")
    @classmethod
    def _unique(cls, subsets: tuple[Subset, ...]) -> tuple[Subset, ...]:
        seen: set[str] = set()
        for s in subsets:
            if s.name in seen:
                raise fail(f"subset {s.name!r} is defined twice")
            seen.add(s.name)
        return subsets

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)


class DestinationRule(ResourceModel):
    KIND: ClassVar[str] = "DestinationRule"
    API_VERSIONS: ClassVar[tuple[str, ...]] = NETWORKING_API_VERSIONS
    kind: Literal["DestinationRule"] = "DestinationRule"
    spec: DestinationRuleSpec
