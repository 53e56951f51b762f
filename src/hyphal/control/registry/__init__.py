"""hyphal.control.registry: the mesh's endpoints, from ServiceEntries and connected sidecars."""

from hyphal.control.registry.model import (
    Endpoint,
    Health,
    RegistryView,
    ServiceKey,
    PortRecord,
    ServiceRecord,
)
from hyphal.control.registry.node import NodeMetadataError, NodePort, ProxyNode
from hyphal.control.registry.registry import Registry, sidecar_endpoints

__all__ = [
    "Endpoint",
    "Health",
    "NodeMetadataError",
    "NodePort",
    "ProxyNode",
    "Registry",
    "RegistryView",
    "ServiceKey",
    "PortRecord",
    "ServiceRecord",
    "sidecar_endpoints",
]
