"""One workload port as a sidecar announces it in its xDS node metadata (a `PORTS` entry).

docs/xds-conventions.md fixes the entry as `{name, port, protocol, app_port, inbound_port}`:
the declared port, where the app listens, where the sidecar's mTLS inbound listener is. The
local runner writes these entries into each sidecar's bootstrap and the control plane reads
them back from the node, so both use this one type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class NodePort:
    """A declared workload port, where its app listens and where the sidecar's mTLS inbound does."""

    name: str
    port: int
    protocol: str
    app_port: int
    inbound_port: int

    def to_metadata(self) -> dict[str, Any]:
        """The `PORTS` entry for this port, as a sidecar's node metadata carries it."""
        return {
            "name": self.name,
            "port": self.port,
            "protocol": self.protocol,
            "app_port": self.app_port,
            "inbound_port": self.inbound_port,
        }

    @classmethod
    def from_metadata(cls, entry: Mapping[str, Any]) -> NodePort:
        """Read a `PORTS` entry (numbers may arrive as floats from a protobuf Struct).

        Defaults: protocol HTTP, app_port = port, inbound_port 0. A missing or non-numeric
        port raises KeyError, TypeError or ValueError; callers name the node and index.
        """
        return cls(
            name=str(entry.get("name", "")),
            port=int(entry["port"]),
            protocol=str(entry.get("protocol", "HTTP")).upper(),
            app_port=int(entry.get("app_port", entry["port"])),
            inbound_port=int(entry.get("inbound_port", 0)),
        )
