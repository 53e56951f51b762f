"""MeshSnapshotSource: the ADS server's SnapshotSource over user resources and the registry.

Translation is cached per (resources version, registry version, node shape): replicas with
identical metadata share one Snapshot object, so a thousand of them cost one translation.
Connected sidecars join the registry through `node_connected` / `node_disconnected`, meant to
be passed to the AdsServer as its on_connect / on_disconnect hooks. With `reconnect_grace`, a
sidecar whose last stream closed stays an endpoint that long: a sidecar reopens its stream
after every certificate renewal, and its peers must not see it vanish for that moment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from hyphal.control.jwks import JwksResolver
from hyphal.control.registry.node import NodeMetadataError, ProxyNode
from hyphal.control.registry.registry import Registry
from hyphal.control.translate import naming
from hyphal.control.translate.inputs import MeshIndex
from hyphal.control.translate.snapshot import as_proxy_node, translate
from hyphal.control.xds.snapshot import EMPTY_SNAPSHOT, NodeInfo, Snapshot

log = logging.getLogger("hyphal.control.translate")

CacheKey = tuple[int, int, str, str]


class MeshSnapshotSource:
    """Implements `hyphal.control.xds.snapshot.SnapshotSource`."""

    def __init__(
        self,
        resources: Iterable[Any],
        registry: Registry | None = None,
        ca_bundle: bytes = b"",
        trust_domain: str = naming.DEFAULT_TRUST_DOMAIN,
        *,
        cache_size: int = 4096,
        reconnect_grace: float = 0.0,
    ) -> None:
        self._reconnect_grace = reconnect_grace
        self._trust_domain = trust_domain
        self._ca_bundle = ca_bundle
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        self._cache: OrderedDict[CacheKey, Snapshot] = OrderedDict()
        self._cache_size = cache_size
        self._refs: dict[str, int] = {}
        self._resources_version = 1
        # jwksUri keys are fetched here and inlined before translation (hyphal.control.jwks)
        self._jwks = JwksResolver(on_change=self._jwks_changed)
        self._raw = list(resources)
        self._index = MeshIndex.build(self._jwks.resolve(self._raw))
        self.translations = 0  # translations actually run (cache misses), for tests and status
        self._registry = registry if registry is not None else Registry(trust_domain=trust_domain)
        records, static = self._index.registry_inputs()
        self._registry.set_services(records, static)
        self._registry.subscribe(lambda _view: self._changed())

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def index(self) -> MeshIndex:
        return self._index

    # -- SnapshotSource -------------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def snapshot_for(self, node: NodeInfo | ProxyNode) -> Snapshot:
        try:
            pnode = as_proxy_node(node)
        except NodeMetadataError as e:
            log.warning("%s; serving nothing until it reconnects with valid metadata", e)
            return EMPTY_SNAPSHOT
        with self._lock:
            index, view, version = self._index, self._registry.view(), self._resources_version
            key = (version, view.version, *pnode.cache_key)
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        out = translate(index, view, pnode, self._ca_bundle, self._trust_domain)
        snap = Snapshot.from_messages(m for by_name in out.values() for m in by_name.values())
        with self._lock:
            self.translations += 1
            if version == self._resources_version and view.version == self._registry.view().version:
                self._cache[key] = snap
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return snap

    # -- inputs ---------------------------------------------------------------------------

    def update_resources(self, resources: Iterable[Any]) -> None:
        """New user resources (a ResourceSet): re-index, refresh the registry, notify."""
        raw = list(resources)
        index = MeshIndex.build(self._jwks.resolve(raw))
        with self._lock:
            self._raw = raw
            self._index = index
            self._resources_version += 1
            self._cache.clear()
        records, static = index.registry_inputs()
        self._registry.set_services(records, static)  # notifies if endpoints changed
        self._changed()

    def _jwks_changed(self) -> None:
        with self._lock:
            raw = self._raw
        self.update_resources(raw)

    def update_ca_bundle(self, ca_bundle: bytes) -> None:
        with self._lock:
            self._ca_bundle = ca_bundle
            self._resources_version += 1
            self._cache.clear()
        self._changed()

    def node_connected(self, node: NodeInfo | ProxyNode) -> None:
        """on_connect hook: a sidecar's ports become endpoints of the Services selecting it."""
        try:
            pnode = as_proxy_node(node)
        except NodeMetadataError as e:
            log.warning("%s; not adding it to the registry", e)
            return
        if not pnode.is_sidecar:
            return
        if _plaintext(node):
            # the plaintext (proxyless) port proves no identity: listed, never an mTLS endpoint,
            # and under its own registry id so it cannot displace a sidecar claiming the same id
            log.warning("node %r claims PROXY_MODE sidecar over plaintext ADS; it will not be "
                        "an endpoint of any Service (connect to the mTLS xDS port)", node.id)
            pnode = dataclasses.replace(pnode, id=_registry_id(node), proxy_mode="grpc")
        with self._lock:
            self._refs[pnode.id] = self._refs.get(pnode.id, 0) + 1
        self._registry.add_node(pnode)

    def node_disconnected(self, node: NodeInfo | ProxyNode) -> None:
        """on_disconnect hook: the last stream of a node closed -> its endpoints go away."""
        node_id = _registry_id(node)
        with self._lock:
            left = self._refs.get(node_id, 0) - 1
            if left > 0:
                self._refs[node_id] = left
                return
            self._refs.pop(node_id, None)
        if self._reconnect_grace > 0:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                loop.call_later(self._reconnect_grace, self._remove_unless_back, node_id)
                return
        self._registry.remove_node(node_id)

    def _remove_unless_back(self, node_id: str) -> None:
        with self._lock:
            if self._refs.get(node_id, 0) > 0:
                return  # it reconnected within the grace period
        self._registry.remove_node(node_id)

    def _changed(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for cb in listeners:
            cb()


def _plaintext(node: NodeInfo | ProxyNode) -> bool:
    return isinstance(node, NodeInfo) and node.peer_identity is None


def _registry_id(node: NodeInfo | ProxyNode) -> str:
    """The registry key of a node: its id, kept apart for identity-less plaintext nodes."""
    return f"plaintext~{node.id}" if _plaintext(node) else node.id
