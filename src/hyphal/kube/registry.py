"""The Kubernetes service registry: Services + EndpointSlices + Pods -> the registry's records.

Pure functions turn the API objects into what local mode produces from hyphal Services and
connected sidecars: a hyphal `Service` resource per Kubernetes Service (so translation knows
the host and its ports), a `ServiceRecord`, and one `Endpoint` per ready address and Service
port, carrying the Pod's labels and, when the Pod has the hyphal sidecar, its SPIFFE identity
(from `spec.serviceAccountName`) and `tls=True`. With iptables capture (docs/kubernetes.md)
the endpoint is the Pod IP and the container port, which the sidecar's inbound side receives.
`KubeRegistry` is a `Registry` whose endpoints for those hosts come from EndpointSlices
instead of from connected sidecars.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from hyphal.config import ConfigErrors, Service, load_text
from hyphal.control.registry.model import Endpoint, PortRecord, ServiceKey, ServiceRecord
from hyphal.control.registry.registry import Registry
from hyphal.identity.spiffe import spiffe_uri
from hyphal.kube.client import JsonObject, KubeClient
from hyphal.kube.informer import ENDPOINT_SLICES, PODS, SERVICES, Informer, ObjectKey

log = logging.getLogger("hyphal.kube.registry")

SIDECAR_NAME = "hyphal-proxy"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})

# Istio's protocol selection: appProtocol first, then the port name's prefix.
_PROTOCOLS = {"http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "grpc-web": "HTTP",
              "h2c": "HTTP2", "kubernetes.io/h2c": "HTTP2", "tcp": "TCP", "https": "TCP",
              "tls": "TCP", "mongo": "TCP", "mysql": "TCP", "redis": "TCP"}


def port_protocol(port: Mapping[str, Any]) -> str:
    """HTTP, HTTP2, GRPC or TCP for a Service port (unnamed / unknown: HTTP, hyphal's default)."""
    app = str(port.get("appProtocol") or "").lower()
    if app in _PROTOCOLS:
        return _PROTOCOLS[app]
    prefix = str(port.get("name") or "").lower().split("-", 1)[0]
    return _PROTOCOLS.get(prefix, "HTTP")


def service_resource(svc: Mapping[str, Any]) -> Service | None:
    """The hyphal Service for a Kubernetes Service, or None when the mesh does not serve it
    (no selector, ExternalName, a system namespace, only UDP/SCTP ports)."""
    meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
    name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "default")
    if ns in SYSTEM_NAMESPACES or spec.get("type") == "ExternalName" or not spec.get("selector"):
        return None
    ports = []
    for p in spec.get("ports") or []:
        if str(p.get("protocol") or "TCP").upper() != "TCP":
            continue
        entry: dict[str, Any] = {"port": p.get("port"), "protocol": port_protocol(p)}
        if p.get("name"):
            entry["name"] = p["name"]
        if p.get("targetPort") is not None:
            entry["targetPort"] = p["targetPort"]
        ports.append(entry)
    if not ports:
        return None
    doc = {"apiVersion": "hyphal.dev/v1alpha1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"ports": ports, "selector": dict(spec.get("selector") or {})}}
    try:
        [resource] = load_text(json.dumps(doc), f"Service {ns}/{name}")
    except ConfigErrors as exc:
        log.warning("Kubernetes Service %s/%s is not served by the mesh: %s", ns, name, exc)
        return None
    assert isinstance(resource, Service)
    return resource


def has_sidecar(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return any(c.get("name") == SIDECAR_NAME for c in containers)


def _host(svc: Service, domain: str) -> str:
    return f"{svc.name}.{svc.namespace}.svc.{domain}"


def service_record(svc: Service, domain: str = "cluster.local") -> ServiceRecord:
    return ServiceRecord(
        name=svc.name, namespace=svc.namespace, host=_host(svc, domain),
        selector=MappingProxyType(dict(svc.spec.selector)),
        ports=tuple(PortRecord(p.port, p.name or p.protocol.lower(), p.protocol, p.target_port)
                    for p in svc.spec.ports),
    )


def slice_endpoints(
    services: Iterable[Service],
    slices: Iterable[Mapping[str, Any]],
    pods: Mapping[ObjectKey, Mapping[str, Any]],
    trust_domain: str = "cluster.local",
) -> dict[ServiceKey, list[Endpoint]]:
    """Endpoints per (host, service port) from EndpointSlices; only ready addresses."""
    by_name = {(s.namespace, s.name): s for s in services}
    out: dict[ServiceKey, list[Endpoint]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        ns = str(meta.get("namespace") or "default")
        svc = by_name.get((ns, str((meta.get("labels") or {}).get(SERVICE_NAME_LABEL) or "")))
        if svc is None or sl.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        slice_ports = {str(p.get("name") or ""): p.get("port") for p in sl.get("ports") or []}
        for sp in svc.spec.ports:
            number = slice_ports.get(sp.name or "")
            if not isinstance(number, int):
                continue
            for ep in sl.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready") is False:
                    continue
                ref = ep.get("targetRef") or {}
                pod = pods.get((str(ref.get("namespace") or ns), str(ref.get("name") or "")))
                if ref.get("kind") != "Pod" or pod is None:
                    labels: Mapping[str, str] = MappingProxyType({})
                    identity, tls, source = "", False, f"EndpointSlice/{ns}/{meta.get('name')}"
                else:
                    pmeta, pspec = pod.get("metadata") or {}, pod.get("spec") or {}
                    labels = MappingProxyType(
                        {str(k): str(v) for k, v in (pmeta.get("labels") or {}).items()})
                    tls = has_sidecar(pod)
                    sa = str(pspec.get("serviceAccountName") or "default")
                    identity = spiffe_uri(trust_domain, ns, sa) if tls else ""
                    source = f"{pmeta.get('name')}.{ns}"
                for address in ep.get("addresses") or []:
                    out.setdefault((_host(svc, trust_domain), sp.port), []).append(Endpoint(
                        address=str(address), port=number, labels=labels, identity=identity,
                        tls=tls, source=source,
                    ))
    return {k: sorted(v, key=Endpoint.sort_key) for k, v in sorted(out.items())}


IndexInputs = tuple[tuple[ServiceRecord, ...], dict[ServiceKey, tuple[Endpoint, ...]]]


class KubeRegistry(Registry):
    """A Registry where Kubernetes Services' endpoints come from EndpointSlices.

    The snapshot source still hands it the resources' registry inputs (`set_services`); those
    for Kubernetes hosts are replaced by the EndpointSlice endpoints given to `set_kube`, so a
    connected sidecar never doubles an endpoint the API already lists.
    """

    def __init__(self, trust_domain: str = "cluster.local") -> None:
        self._kube_hosts: frozenset[str] = frozenset()
        self._kube_endpoints: dict[ServiceKey, tuple[Endpoint, ...]] = {}
        self._index_inputs: IndexInputs = ((), {})
        super().__init__(trust_domain=trust_domain)

    def set_services(
        self,
        services: Iterable[ServiceRecord],
        static_endpoints: Mapping[ServiceKey, Iterable[Endpoint]] | None = None,
    ) -> Any:
        self._index_inputs = (
            tuple(services), {k: tuple(v) for k, v in (static_endpoints or {}).items()})
        return self._apply()

    def set_kube(
        self, hosts: Iterable[str], endpoints: Mapping[ServiceKey, Iterable[Endpoint]]
    ) -> Any:
        self._kube_hosts = frozenset(hosts)
        self._kube_endpoints = {k: tuple(v) for k, v in endpoints.items()}
        return self._apply()

    def _apply(self) -> Any:
        records, static = self._index_inputs
        kept = [r for r in records if r.host not in self._kube_hosts]
        merged = {**static, **self._kube_endpoints}
        return super().set_services(kept, merged)


class KubeServiceSource:
    """Informers on Services, EndpointSlices and Pods feeding a KubeRegistry.

    `on_services(models)` is called when the set of mesh Services changes (they join the
    resources that translation and validation see); endpoint changes go straight into the
    registry.
    """

    def __init__(
        self,
        client: KubeClient,
        registry: KubeRegistry,
        on_services: Callable[[tuple[Service, ...]], None],
        trust_domain: str = "cluster.local",
    ) -> None:
        self.registry = registry
        self._on_services = on_services
        self._trust_domain = trust_domain
        self.services: tuple[Service, ...] = ()
        self._raw: dict[ObjectKey, JsonObject] = {}
        self.informers = [Informer(client, r, self._changed)
                          for r in (SERVICES, ENDPOINT_SLICES, PODS)]

    def _changed(self) -> None:
        if not all(i.synced.is_set() for i in self.informers):
            return  # the first lists are still coming in; one refresh once all have landed
        svcs, slices, pods = (i.items() for i in self.informers)
        if dict(svcs) != self._raw:
            self._raw = dict(svcs)
            models = tuple(m for m in (service_resource(s) for _, s in sorted(svcs.items()))
                           if m is not None)
            if models != self.services:
                self.services = models
                self._on_services(models)
        endpoints = slice_endpoints(self.services, slices.values(), pods, self._trust_domain)
        self.registry.set_kube({_host(s, self._trust_domain) for s in self.services}, endpoints)
