"""What every connection of one listener shares: spec, config holder, clusters, telemetry."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hyphal.proxy.http.codec import Limits
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import ClusterSpec, ListenerSpec, ProxyConfig
from hyphal.proxy.transport.tls import TlsMaterial
from hyphal.proxy.upstream.cluster import ClusterManager
from hyphal.proxy.upstream.pool import ConnectionPool
from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import PeerLabels, Stats

if TYPE_CHECKING:
    from hyphal.proxy.h2.upstream import H2Pool


@dataclass(frozen=True, slots=True)
class Timeouts:
    header_s: float = 10.0  # first byte of a request to the end of its headers (slowloris)
    idle_s: float = 300.0  # keep-alive connection with no request
    drain_s: float = 5.0


@dataclass(slots=True)
class ListenerContext:
    """Mutable only in `spec` (replaced when a config swap changes nothing that needs a
    rebind) and in the connection set."""

    spec: ListenerSpec
    holder: ConfigHolder
    clusters: ClusterManager
    pool: ConnectionPool
    tls: TlsMaterial | None
    stats: Stats
    access_log: AccessLog
    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    rng: random.Random = field(default_factory=random.Random)
    connections: set[object] = field(default_factory=set)
    _labels: dict[tuple[str, str, str | None], PeerLabels] = field(default_factory=dict)
    draining: bool = False
    h2_pool: H2Pool | None = None  # multiplexed HTTP/2 upstreams (hyphal.proxy.h2)
    # Read per request; fixed for the context's life: a `spec` replaced in place has the
    # same kind and TLS (`listeners.needs_rebind`: another kind or TLS is a new context).
    inbound: bool = field(init=False)
    downstream_tls: bool = field(init=False)
    # The last `labels` answer, checked by identity before the dict (no key tuple per request).
    _last: tuple[ProxyConfig, ClusterSpec | None, str | None, PeerLabels] | None = field(
        default=None, init=False)

    def __post_init__(self) -> None:
        self.inbound = self.spec.is_inbound
        self.downstream_tls = self.spec.tls is not None

    def labels(self, config: ProxyConfig, cluster: ClusterSpec | None,
               peer: str | None) -> PeerLabels:
        """Istio label set for this listener/cluster/peer, resolved once and cached."""
        last = self._last
        if last is not None and last[0] is config and last[1] is cluster and last[2] == peer:
            return last[3]
        key = (config.version, cluster.name if cluster else "", peer)
        found = self._labels.get(key)
        if found is not None:
            self._last = (config, cluster, peer, found)
            return found
        if len(self._labels) > 4096:
            self._labels.clear()
        if self.inbound:
            ns = _namespace_of(peer)
            found = PeerLabels(
                reporter="destination", source_principal=peer or "unknown",
                source_workload_namespace=ns,
                destination_workload=config.workload,
                destination_workload_namespace=config.namespace,
                destination_principal=config.identity or "unknown",
                destination_service=(cluster.service or cluster.name) if cluster else "unknown",
                destination_cluster=cluster.name if cluster else "unknown",
                connection_security_policy="mutual_tls" if self.downstream_tls else "none",
            )
        else:
            found = PeerLabels(
                reporter="source", source_workload=config.workload,
                source_workload_namespace=config.namespace,
                source_principal=config.identity or "unknown",
                destination_service=(cluster.service or cluster.name) if cluster else "unknown",
                destination_cluster=cluster.name if cluster else "unknown",
                destination_principal=(sorted(cluster.tls.expected_sans)[0]
                                       if cluster and cluster.tls and cluster.tls.expected_sans
                                       else "unknown"),
                connection_security_policy="unknown",
            )
        found = self.stats.intern(found)
        self._labels[key] = found
        self._last = (config, cluster, peer, found)
        return found


def _namespace_of(spiffe: str | None) -> str:
    if not spiffe:
        return "unknown"
    parts = spiffe.split("/")
    try:
        return parts[parts.index("ns") + 1]
    except (ValueError, IndexError):
        return "unknown"
