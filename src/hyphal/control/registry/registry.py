"""The mutable registry holder: connected sidecars + static endpoints -> RegistryView snapshots.

Meant for one asyncio thread: every mutation rebuilds the view and, when its content changed,
bumps the version and calls the listeners synchronously.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from hyphal.control.registry.model import (
    Endpoint,
    PortRecord,
    RegistryView,
    ServiceKey,
    ServiceRecord,
)
from hyphal.control.registry.node import NodePort, ProxyNode
from hyphal.identity.spiffe import spiffe_uri

Listener = Callable[[RegistryView], None]


def _target_matches(sp: PortRecord, np: NodePort) -> bool:
    target = sp.port if sp.target_port is None else sp.target_port
    if isinstance(target, str):
        if target.isdigit():
            return np.port == int(target)
        return np.name == target
    return np.port == target


def sidecar_endpoints(
    services: Iterable[ServiceRecord], node: ProxyNode, trust_domain: str
) -> dict[ServiceKey, Endpoint]:
    """The endpoints a sidecar node contributes: one per selecting Service port it serves."""
    out: dict[ServiceKey, Endpoint] = {}
    if not node.is_sidecar:
        return out
    identity = spiffe_uri(trust_domain, node.namespace, node.service_account)
    for svc in services:
        if svc.namespace != node.namespace or not svc.selector:
            continue
        if svc.service_accounts is not None and node.service_account not in svc.service_accounts:
            continue  # claims the labels but not the identity the Service is run by
        if any(node.labels.get(k) != v for k, v in svc.selector.items()):
            continue
        for sp in svc.ports:
            for np in node.ports:
                if _target_matches(sp, np):
                    out[(svc.host, sp.port)] = Endpoint(
                        address=node.instance_ip,
                        port=np.inbound_port,
                        labels=node.labels,
                        identity=identity,
                        tls=True,
                        source=node.id,
                    )
                    break
    return out


class Registry:
    """Holds services, static endpoints and connected nodes; hands out RegistryView snapshots."""

    def __init__(
        self,
        services: Iterable[ServiceRecord] = (),
        static_endpoints: Mapping[ServiceKey, Iterable[Endpoint]] | None = None,
        trust_domain: str = "cluster.local",
    ) -> None:
        self._trust_domain = trust_domain
        self._services: tuple[ServiceRecord, ...] = tuple(services)
        self._static: dict[ServiceKey, tuple[Endpoint, ...]] = {
            k: tuple(v) for k, v in (static_endpoints or {}).items()
        }
        self._nodes: dict[str, ProxyNode] = {}
        self._listeners: list[Listener] = []
        endpoints, nodes = self._build()
        self._view = RegistryView(version=1, endpoints=endpoints, nodes=nodes)

    def view(self) -> RegistryView:
        return self._view

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(view)` after each change; returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def set_services(
        self,
        services: Iterable[ServiceRecord],
        static_endpoints: Mapping[ServiceKey, Iterable[Endpoint]] | None = None,
    ) -> RegistryView:
        self._services = tuple(services)
        self._static = {k: tuple(v) for k, v in (static_endpoints or {}).items()}
        return self._refresh()

    def add_node(self, node: ProxyNode) -> RegistryView:
        """Register (or replace, by id) a connected proxy."""
        self._nodes[node.id] = node
        return self._refresh()

    def remove_node(self, node_id: str) -> RegistryView:
        self._nodes.pop(node_id, None)
        return self._refresh()

    def _build(
        self,
    ) -> tuple[Mapping[ServiceKey, tuple[Endpoint, ...]], Mapping[str, ProxyNode]]:
        eps: dict[ServiceKey, list[Endpoint]] = {k: list(v) for k, v in self._static.items()}
        for node_id in sorted(self._nodes):
            for key, ep in sidecar_endpoints(
                self._services, self._nodes[node_id], self._trust_domain
            ).items():
                eps.setdefault(key, []).append(ep)
        frozen = {k: tuple(sorted(v, key=Endpoint.sort_key)) for k, v in sorted(eps.items())}
        return MappingProxyType(frozen), MappingProxyType(dict(self._nodes))

    def _refresh(self) -> RegistryView:
        endpoints, nodes = self._build()
        old = self._view
        if dict(endpoints) == dict(old.endpoints) and dict(nodes) == dict(old.nodes):
            return old
        self._view = RegistryView(version=old.version + 1, endpoints=endpoints, nodes=nodes)
        for listener in list(self._listeners):
            listener(self._view)
        return self._view
