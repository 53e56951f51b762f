"""The translator's view of user resources: services by host, host resolution, visibility.

Built once per ResourceSet (the snapshot source caches it), so per-node translation only
looks things up. Also turns the resources into the registry's inputs (service selectors and
ServiceEntry endpoints).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hyphal.config.models import (
    AuthorizationPolicy,
    DestinationRule,
    GatewayGRPCRoute,
    GatewayHTTPRoute,
    PeerAuthentication,
    RateLimitPolicy,
    RequestAuthentication,
    Service,
    ServiceEntry,
    VirtualService,
    Workload,
)
from hyphal.control.registry.model import Endpoint, PortRecord, ServiceKey, ServiceRecord
from hyphal.control.translate import naming
from hyphal.identity.spiffe import spiffe_uri

HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC"})


@dataclass(frozen=True, slots=True)
class PortInfo:
    number: int
    name: str
    protocol: str
    target: int | str | None = None  # Service targetPort (None: same as number)

    @property
    def is_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """A destination host: a hyphal Service (mesh, mTLS) or one host of a ServiceEntry."""

    host: str
    namespace: str
    name: str
    ports: tuple[PortInfo, ...]
    export_to: tuple[str, ...]
    mesh: bool  # True: sidecar-backed hyphal Service (mTLS); False: ServiceEntry (plaintext)
    selector: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def visible_from(self, namespace: str) -> bool:
        return visible(self.export_to, self.namespace, namespace)

    def port(self, number: int) -> PortInfo | None:
        return next((p for p in self.ports if p.number == number), None)

    @property
    def first_http_port(self) -> int | None:
        return next((p.number for p in self.ports if p.is_http), None)


def visible(export_to: tuple[str, ...], owner_ns: str, viewer_ns: str) -> bool:
    """Istio exportTo: empty or `*` = everywhere, `.` = own namespace, else listed namespaces."""
    if not export_to or "*" in export_to:
        return True
    if "." in export_to and owner_ns == viewer_ns:
        return True
    return viewer_ns in export_to


def _service_info(s: Service) -> ServiceInfo:
    return ServiceInfo(
        host=naming.service_fqdn(s.name, s.namespace),
        namespace=s.namespace,
        name=s.name,
        ports=tuple(
            PortInfo(p.port, p.name or p.protocol.lower(), p.protocol, p.target_port)
            for p in s.spec.ports
        ),
        export_to=("*",),
        mesh=True,
        selector=MappingProxyType(dict(s.spec.selector)),
    )


@dataclass(frozen=True, slots=True)
class MeshIndex:
    """Everything translation reads from user resources, indexed."""

    services: Mapping[str, ServiceInfo]  # by host, sorted
    workloads: tuple[Workload, ...]
    virtual_services: tuple[VirtualService, ...]
    destination_rules: tuple[DestinationRule, ...]
    authorization_policies: tuple[AuthorizationPolicy, ...]
    peer_authentications: tuple[PeerAuthentication, ...]
    service_entries: tuple[ServiceEntry, ...]
    http_routes: tuple[GatewayHTTPRoute, ...] = ()  # GAMMA: attached to Services
    grpc_routes: tuple[GatewayGRPCRoute, ...] = ()
    request_authentications: tuple[RequestAuthentication, ...] = ()
    rate_limit_policies: tuple[RateLimitPolicy, ...] = ()

    @classmethod
    def build(cls, resources: Iterable[Any]) -> MeshIndex:
        """From a ResourceSet (or any iterable of resource models)."""
        items = list(resources)
        services: dict[str, ServiceInfo] = {}
        for s in sorted((r for r in items if isinstance(r, Service)), key=_key):
            info = _service_info(s)
            services[info.host] = info
        entries = tuple(sorted((r for r in items if isinstance(r, ServiceEntry)), key=_key))
        for se in entries:
            ports = tuple(
                PortInfo(p.number, p.name or p.protocol.lower(), p.protocol) for p in se.spec.ports
            )
            for host in se.spec.hosts:
                if host.startswith("*") or host in services:
                    continue  # wildcard hosts need DNS capture; a Service wins over an entry
                services[host] = ServiceInfo(
                    host=host,
                    namespace=se.namespace,
                    name=se.name,
                    ports=ports,
                    export_to=se.spec.export_to,
                    mesh=False,
                )

        def of(t: type[Any]) -> tuple[Any, ...]:
            return tuple(sorted((r for r in items if isinstance(r, t)), key=_key))

        return cls(
            services=MappingProxyType(dict(sorted(services.items()))),
            workloads=of(Workload),
            virtual_services=of(VirtualService),
            destination_rules=of(DestinationRule),
            authorization_policies=of(AuthorizationPolicy),
            peer_authentications=of(PeerAuthentication),
            service_entries=entries,
            http_routes=of(GatewayHTTPRoute),
            grpc_routes=of(GatewayGRPCRoute),
            request_authentications=of(RequestAuthentication),
            rate_limit_policies=of(RateLimitPolicy),
        )

    def resolve_host(self, host: str, namespace: str) -> str:
        """Istio short names: `a` -> `a.<ns>.svc.cluster.local`, `a.b` -> `a.b.svc.cluster.local`.

        A host that is already a known service name is returned as it is.
        """
        if host in self.services:
            return host
        parts = host.split(".")
        if len(parts) == 1:
            return naming.service_fqdn(host, namespace)
        if len(parts) == 2:
            return naming.service_fqdn(parts[0], parts[1])
        if len(parts) == 3 and parts[2] == "svc":
            return naming.service_fqdn(parts[0], parts[1])
        return host

    def visible_services(self, namespace: str) -> list[ServiceInfo]:
        return [s for s in self.services.values() if s.visible_from(namespace)]

    def service_accounts(self, host: str, trust_domain: str) -> set[str]:
        """SPIFFE ids of the Workloads a Service selects (before any sidecar connects)."""
        svc = self.services.get(host)
        if svc is None or not svc.mesh or not svc.selector:
            return set()
        return {
            spiffe_uri(trust_domain, w.namespace, w.spec.service_account)
            for w in self.workloads
            if w.namespace == svc.namespace
            and all(w.spec.labels.get(k) == v for k, v in svc.selector.items())
        }

    def registry_inputs(
        self,
    ) -> tuple[list[ServiceRecord], dict[ServiceKey, list[Endpoint]]]:
        """What the Registry needs: Service selectors, and ServiceEntry endpoints (plaintext)."""
        records: list[ServiceRecord] = []
        for s in self.services.values():
            if not s.mesh:
                continue
            records.append(
                ServiceRecord(
                    name=s.name,
                    namespace=s.namespace,
                    host=s.host,
                    selector=s.selector,
                    ports=tuple(
                        PortRecord(p.number, p.name, p.protocol, p.target) for p in s.ports
                    ),
                    service_accounts=frozenset(
                        w.spec.service_account
                        for w in self.workloads
                        if w.namespace == s.namespace
                        and all(w.spec.labels.get(k) == v for k, v in s.selector.items())
                    ),
                )
            )
        static: dict[ServiceKey, list[Endpoint]] = {}
        for se in self.service_entries:
            for host in se.spec.hosts:
                info = self.services.get(host)
                if info is None or info.mesh:
                    continue
                for p in se.spec.ports:
                    for e in se.spec.endpoints:
                        port = e.ports.get(p.name or "", p.target_port or p.number)
                        static.setdefault((host, p.number), []).append(
                            Endpoint(
                                address=e.address,
                                port=port,
                                labels=MappingProxyType(dict(e.labels)),
                                weight=e.weight or 1,
                                tls=False,
                                source=f"ServiceEntry/{se.namespace}/{se.name}",
                            )
                        )
        return records, static


def _key(r: Any) -> tuple[str, str]:
    return (r.namespace, r.name)
