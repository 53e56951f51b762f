"""ClusterLoadAssignment (EDS) builders: registry endpoints -> one locality-less endpoint group."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hyphal.control.registry.model import Endpoint, Health
from hyphal.control.translate import naming
from hyphal.control.translate.pb import (
    Message,
    address_pb2,
    endpoint_components_pb2,
    endpoint_pb2,
    health_check_pb2,
    struct,
)

_HEALTH = {
    Health.UNKNOWN: health_check_pb2.UNKNOWN,
    Health.HEALTHY: health_check_pb2.HEALTHY,
    Health.UNHEALTHY: health_check_pb2.UNHEALTHY,
    Health.DRAINING: health_check_pb2.DRAINING,
}


def lb_endpoint(
    address: str,
    port: int,
    *,
    weight: int = 1,
    health: Health = Health.HEALTHY,
    metadata: dict[str, object] | None = None,
) -> Message:
    ep = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=address, port_value=port)
            )
        ),
        health_status=_HEALTH[health],
    )
    ep.load_balancing_weight.value = max(1, weight)
    if metadata is not None:
        ep.metadata.filter_metadata[naming.HYPHAL_METADATA].CopyFrom(struct(metadata))
    return ep


def build_cla(
    cluster_name: str,
    endpoints: Iterable[Endpoint],
    subset_labels: Mapping[str, str] | None = None,
) -> Message:
    """The CLA for `cluster_name`: endpoints matching `subset_labels`, with an empty locality.

    grpcio NACKs a group with no locality and drops zero weights (locality and endpoint),
    so all are always set.
    """
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    group = cla.endpoints.add()
    group.locality.SetInParent()
    group.load_balancing_weight.value = 1  # grpcio drops zero-weight localities
    for ep in endpoints:
        if subset_labels and not ep.matches(subset_labels):
            continue
        group.lb_endpoints.append(
            lb_endpoint(
                ep.address,
                ep.port,
                weight=ep.weight,
                health=ep.health,
                metadata={"labels": dict(ep.labels), "identity": ep.identity},
            )
        )
    return cla
