"""What the ADS server serves: type URLs, the node asking, and per-node resource snapshots.

A `Snapshot` is an immutable set of xDS resources (already packed in `Any`) for one node. Its
per-type versions and per-resource digests are content hashes computed once at construction,
so the server can tell cheaply which types changed between two snapshots and which version a
named subset of resources has. A `SnapshotSource` (the translation layer) produces snapshots
per node and tells the server when they may have changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any as AnyType
from typing import Protocol, runtime_checkable

from envoy.config.core.v3 import base_pb2
from google.protobuf import any_pb2, json_format, message

_PREFIX = "type.googleapis.com/"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# Make-before-break: the trust bundle before anything naming it, clusters and endpoints before
# the listeners and routes that name them.
PUSH_ORDER: tuple[str, ...] = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)
TYPE_URLS: frozenset[str] = frozenset(PUSH_ORDER)
# Types whose empty (first) subscription means "everything" (xDS legacy wildcard).
WILDCARD_TYPES: frozenset[str] = frozenset({LISTENER, CLUSTER})

SHORT_NAMES: Mapping[str, str] = MappingProxyType(
    {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS"}
)


def short_name(type_url: str) -> str:
    """`LDS`, `CDS`, ... for log lines; the type URL itself for anything else."""
    return SHORT_NAMES.get(type_url, type_url)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """The node at the other end of an ADS stream, as it claims itself, plus its proven peer id.

    `peer_identity` is the SPIFFE id of the verified client certificate, or None when the stream
    came over the loopback-only plaintext port (there the node is trusted as claimed).
    """

    id: str
    cluster: str = ""
    metadata: Mapping[str, AnyType] = field(default_factory=dict, hash=False, compare=True)
    namespace: str = ""
    service_account: str = ""
    proxy_mode: str = "grpc"
    peer_identity: str | None = None

    @classmethod
    def from_proto(cls, node: base_pb2.Node, peer_identity: str | None = None) -> NodeInfo:
        """Read id, cluster and the conventions' metadata keys from a `core.v3.Node`."""
        md: dict[str, AnyType] = (
            json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        )
        return cls(
            id=node.id,
            cluster=node.cluster,
            metadata=md,
            namespace=str(md.get("NAMESPACE") or ""),
            service_account=str(md.get("SERVICE_ACCOUNT") or ""),
            proxy_mode=str(md.get("PROXY_MODE") or "grpc"),
            peer_identity=peer_identity,
        )


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _version_of(items: Iterable[tuple[str, str]]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for name, digest in items:
        h.update(name.encode())
        h.update(b"\0")
        h.update(digest.encode())
        h.update(b"\n")
    return h.hexdigest()


def resource_name(msg: message.Message) -> str:
    """The xDS name of a resource message (`cluster_name` for ClusterLoadAssignment)."""
    if msg.DESCRIPTOR.full_name == "envoy.config.endpoint.v3.ClusterLoadAssignment":
        return str(msg.cluster_name)
    return str(msg.name)


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """Immutable xDS resources for one node: type URL -> name -> packed `Any`.

    Versions are short content hashes: `versions[type_url]` covers every resource of that type,
    `version_for(type_url, names)` a subset (equal to `versions[...]` when the subset is all).
    Never mutate the `Any` messages after construction.
    """

    resources: Mapping[str, Mapping[str, any_pb2.Any]]
    versions: Mapping[str, str] = field(init=False)
    digests: Mapping[str, Mapping[str, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        resources: dict[str, Mapping[str, any_pb2.Any]] = {}
        versions: dict[str, str] = {}
        digests: dict[str, Mapping[str, str]] = {}
        for type_url, by_name in self.resources.items():
            frozen = MappingProxyType(dict(sorted(by_name.items())))
            d = {n: _digest(a.SerializeToString(deterministic=True)) for n, a in frozen.items()}
            resources[type_url] = frozen
            digests[type_url] = MappingProxyType(d)
            versions[type_url] = _version_of(d.items())
        object.__setattr__(self, "resources", MappingProxyType(resources))
        object.__setattr__(self, "versions", MappingProxyType(versions))
        object.__setattr__(self, "digests", MappingProxyType(digests))

    @classmethod
    def from_messages(cls, messages: Iterable[message.Message]) -> Snapshot:
        """Pack resource messages (Listener, Cluster, ...) into a snapshot, keyed by their names."""
        out: dict[str, dict[str, any_pb2.Any]] = {}
        for msg in messages:
            packed = any_pb2.Any()
            packed.Pack(msg)
            out.setdefault(packed.type_url, {})[resource_name(msg)] = packed
        return cls(out)

    def names(self, type_url: str) -> Mapping[str, any_pb2.Any]:
        return self.resources.get(type_url, _NO_RESOURCES)

    def version(self, type_url: str) -> str:
        """Version of every resource of this type (the version of the empty set if none)."""
        return self.versions.get(type_url, _EMPTY_VERSION)

    def version_for(self, type_url: str, names: tuple[str, ...]) -> str:
        """Version of a subset of existing names (sorted, as `select` returns them)."""
        digests = self.digests.get(type_url, _NO_DIGESTS)
        if len(names) == len(digests):
            return self.version(type_url)
        return _version_of((n, digests[n]) for n in names)

    def select(self, type_url: str, wanted: frozenset[str] | None) -> tuple[str, ...]:
        """Sorted names to send: all of this type for a wildcard (None), else wanted ∩ existing."""
        have = self.resources.get(type_url, _NO_RESOURCES)
        if wanted is None:
            return tuple(have)
        if len(wanted) == 1:
            (only,) = wanted
            return (only,) if only in have else ()
        return tuple(sorted(n for n in wanted if n in have))


_NO_RESOURCES: Mapping[str, any_pb2.Any] = MappingProxyType({})
_NO_DIGESTS: Mapping[str, str] = MappingProxyType({})
_EMPTY_VERSION = _version_of(())

EMPTY_SNAPSHOT = Snapshot({})


@runtime_checkable
class SnapshotSource(Protocol):
    """Where the ADS server gets each node's resources, and hears that they may have changed."""

    def snapshot_for(self, node: NodeInfo) -> Snapshot:
        """The node's current snapshot; pure (no I/O), may be cached by the source."""
        ...

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` whenever any snapshot may have changed (any thread)."""
        ...


class StaticSource:
    """A `SnapshotSource` holding one snapshot for every node, replaced with `set()`.

    Useful for tests, benchmarks and fixed meshes; listeners run on the caller's thread.
    """

    def __init__(self, snapshot: Snapshot = EMPTY_SNAPSHOT) -> None:
        self._snapshot = snapshot
        self._listeners: list[Callable[[], None]] = []

    def snapshot_for(self, node: NodeInfo) -> Snapshot:
        return self._snapshot

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def set(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        for cb in list(self._listeners):
            cb()
