"""hyphal.control.registry: the mesh's endpoints, from ServiceEntries and connected sidecars."""

from hyphal.control.registry.model import (
    Endpoint,
    Health,
    PortRecord,
    RegistryView,
    ServiceKey,
    ServiceRecord,
)
from hyphal.control.registry.node import NodeMetadataError, NodePort, ProxyNode
from hyphal.control.registry.registry import Registry, sidecar_endpoints

__all__ = [
    "Endpoint",
    "Health",
    "NodeMetadataError",
    "NodePort",
    "PortRecord",
    "ProxyNode",
    "Registry",
    "RegistryView",
    "ServiceKey",
    "ServiceRecord",
    "sidecar_endpoints",
]
