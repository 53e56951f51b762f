"""A connected proxy's identity and ports, parsed from its xDS node metadata.

The metadata keys are fixed by docs/xds-conventions.md. Struct numbers arrive as floats; they
are turned back into ints here so nothing downstream has to care.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from google.protobuf import json_format

from hyphal.identity.node import NodePort as NodePort  # re-exported: the registry's port type

_EMPTY: Mapping[str, str] = MappingProxyType({})
_EMPTY_PORTS: Mapping[str, int] = MappingProxyType({})


class NodeMetadataError(ValueError):
    """Node metadata that cannot be used; the message names the node and the key."""


@dataclass(frozen=True, slots=True)
class ProxyNode:
    """What the control plane knows about one connected proxy (sidecar or proxyless)."""

    id: str
    cluster: str = ""
    namespace: str = "default"
    service_account: str = "default"
    workload_name: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    instance_ip: str = "127.0.0.1"
    proxy_mode: str = "grpc"
    outbound_http_port: int | None = None
    ports: tuple[NodePort, ...] = ()
    upstream_ports: Mapping[str, int] = field(default_factory=lambda: _EMPTY_PORTS)
    metadata_hash: str = ""
    # transparent capture (hyphal.control.translate.capture): NONE or REDIRECT, and the
    # service VIPs the node's namespace resolves names to (FQDN -> IP)
    interception_mode: str = "NONE"
    service_vips: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    @property
    def is_sidecar(self) -> bool:
        return self.proxy_mode == "sidecar"

    @property
    def cache_key(self) -> tuple[str, str]:
        """What translation depends on: everything but the node id (replicas share output)."""
        return (self.cluster, self.metadata_hash)

    @classmethod
    def from_metadata(cls, node_id: str, cluster: str, metadata: Mapping[str, Any]) -> ProxyNode:
        """Parse the conventions' metadata keys; raises NodeMetadataError naming the bad key."""
        md = dict(metadata)
        mode = str(md.get("PROXY_MODE") or "grpc")
        if mode not in ("sidecar", "grpc"):
            raise NodeMetadataError(
                f"node {node_id!r}: PROXY_MODE must be 'sidecar' or 'grpc', not {mode!r}"
            )
        if mode == "sidecar" and not md.get("NAMESPACE"):
            raise NodeMetadataError(f"node {node_id!r}: sidecars must send metadata NAMESPACE")
        labels = md.get("LABELS") or {}
        if not isinstance(labels, Mapping):
            raise NodeMetadataError(f"node {node_id!r}: LABELS must be a struct of strings")
        ports: list[NodePort] = []
        for i, p in enumerate(md.get("PORTS") or []):
            try:
                ports.append(NodePort.from_metadata(p))
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise NodeMetadataError(
                    f"node {node_id!r}: PORTS[{i}] needs numeric port/app_port/inbound_port ({e})"
                ) from e
        upstream = md.get("UPSTREAM_PORTS") or {}
        try:
            upstream_ports = {str(k): int(v) for k, v in dict(upstream).items()}
        except (TypeError, ValueError) as e:
            raise NodeMetadataError(
                f"node {node_id!r}: UPSTREAM_PORTS must map '<fqdn>:<port>' to a number ({e})"
            ) from e
        ohp = md.get("OUTBOUND_HTTP_PORT")
        interception = str(md.get("INTERCEPTION_MODE") or "NONE").upper()
        if interception not in ("NONE", "REDIRECT"):
            raise NodeMetadataError(
                f"node {node_id!r}: INTERCEPTION_MODE must be 'NONE' or 'REDIRECT', "
                f"not {interception!r}")
        vips = md.get("SERVICE_VIPS") or {}
        if not isinstance(vips, Mapping):
            raise NodeMetadataError(f"node {node_id!r}: SERVICE_VIPS must map FQDN to an IP")
        digest = hashlib.sha256(
            json.dumps([cluster, md], sort_keys=True, default=str).encode()
        ).hexdigest()[:24]
        return cls(
            id=node_id,
            cluster=cluster,
            namespace=str(md.get("NAMESPACE") or "default"),
            service_account=str(md.get("SERVICE_ACCOUNT") or "default"),
            workload_name=str(md.get("WORKLOAD_NAME") or cluster),
            labels=MappingProxyType({str(k): str(v) for k, v in labels.items()}),
            instance_ip=str(md.get("INSTANCE_IP") or "127.0.0.1"),
            proxy_mode=mode,
            outbound_http_port=int(ohp) if ohp is not None else None,
            ports=tuple(ports),
            upstream_ports=MappingProxyType(upstream_ports),
            metadata_hash=digest,
            interception_mode=interception,
            service_vips=MappingProxyType({str(k): str(v) for k, v in vips.items()}),
        )

    @classmethod
    def from_proto(cls, node: Any) -> ProxyNode:
        """From an `envoy.config.core.v3.Node` message."""
        md = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        return cls.from_metadata(node.id, node.cluster, md)
