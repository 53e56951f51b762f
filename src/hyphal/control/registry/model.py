"""The registry's immutable data: endpoints per (host, port), and the services that select them."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from hyphal.control.registry.node import ProxyNode

_NO_LABELS: Mapping[str, str] = MappingProxyType({})


class Health(enum.Enum):
    """Mirrors envoy.config.core.v3.HealthStatus values that the registry can know."""

    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2
    DRAINING = 3


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address that serves a (host, port)."""

    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=lambda: _NO_LABELS)
    identity: str = ""  # SPIFFE id of the workload; "" for plaintext (ServiceEntry) endpoints
    weight: int = 1
    health: Health = Health.HEALTHY
    tls: bool = False
    source: str = ""  # node id or ServiceEntry name, for diagnostics

    def matches(self, selector: Mapping[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())

    def sort_key(self) -> tuple[str, int, str]:
        return (self.address, self.port, self.source)


@dataclass(frozen=True, slots=True)
class PortRecord:
    """A hyphal Service port: the number clients use and the workload port it targets."""

    port: int
    name: str = ""
    protocol: str = "HTTP"
    target_port: int | str | None = None  # number, port name, or None (= port)


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """What the registry needs from a hyphal Service to turn sidecars into its endpoints."""

    name: str
    namespace: str
    host: str
    selector: Mapping[str, str]
    ports: tuple[PortRecord, ...]
    # Service accounts (in `namespace`) of the Workloads the selector picks: a connected
    # sidecar claiming the selector's labels becomes an endpoint only with one of these
    # identities (registry poisoning). None: the caller vouches for every node it adds.
    service_accounts: frozenset[str] | None = None


ServiceKey = tuple[str, int]  # (host, port)


@dataclass(frozen=True, slots=True)
class RegistryView:
    """An immutable snapshot of every endpoint the mesh knows; `version` grows on each change."""

    version: int = 0
    endpoints: Mapping[ServiceKey, tuple[Endpoint, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    nodes: Mapping[str, ProxyNode] = field(default_factory=lambda: MappingProxyType({}))

    def endpoints_for(self, host: str, port: int) -> tuple[Endpoint, ...]:
        return self.endpoints.get((host, port), ())

    def identities_for(self, host: str) -> frozenset[str]:
        """SPIFFE ids of every endpoint behind `host`, any port."""
        return frozenset(
            ep.identity
            for (h, _), eps in self.endpoints.items()
            if h == host
            for ep in eps
            if ep.identity
        )
