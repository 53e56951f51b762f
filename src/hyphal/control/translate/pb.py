"""The Envoy protobuf modules the translators build, imported once (xds-protos ships no stubs)."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import (
    circuit_breaker_pb2,
    cluster_pb2,
    outlier_detection_pb2,
)
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import (
    endpoint_components_pb2,
    endpoint_pb2,
)
from envoy.config.listener.v3 import (
    api_listener_pb2,
    listener_components_pb2,
    listener_pb2,
)
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import (
    route_components_pb2,
    route_pb2,
)
from envoy.extensions.filters.common.fault.v3 import (
    fault_pb2 as common_fault_pb2,
)
from envoy.extensions.filters.http.fault.v3 import (
    fault_pb2,
)
from envoy.extensions.filters.http.rbac.v3 import (
    rbac_pb2 as http_rbac_pb2,
)
from envoy.extensions.filters.http.router.v3 import (
    router_pb2,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import (
    rbac_pb2 as network_rbac_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import (
    tcp_proxy_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import (
    common_pb2 as tls_common_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import (
    secret_pb2,
    tls_pb2,
)
from envoy.extensions.upstreams.http.v3 import (
    http_protocol_options_pb2,
)
from envoy.type.matcher.v3 import (
    metadata_pb2 as metadata_matcher_pb2,
)
from envoy.type.matcher.v3 import (
    path_pb2,
    regex_pb2,
    string_pb2,
)
from envoy.type.v3 import percent_pb2
from google.protobuf import (
    any_pb2,
    duration_pb2,
    struct_pb2,
    wrappers_pb2,
)

Message = Any  # a protobuf message; precise types are not available to mypy


def pack(msg: Message) -> Message:
    """Wrap a message in google.protobuf.Any."""
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def duration(seconds: float) -> Message:
    """A Duration from (possibly fractional) seconds, exact to the nanosecond."""
    d = duration_pb2.Duration()
    nanos_total = round(seconds * 1_000_000_000)
    d.seconds, d.nanos = divmod(nanos_total, 1_000_000_000)
    return d


def u32(value: int) -> Message:
    return wrappers_pb2.UInt32Value(value=value)


def struct(value: dict[str, Any]) -> Message:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def ads_source() -> Message:
    """`ads {}` config source, resource API v3."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def sds(name: str) -> Message:
    """An SDS secret reference fetched over ADS."""
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_source())


__all__ = [
    "Message",
    "address_pb2",
    "ads_source",
    "any_pb2",
    "api_listener_pb2",
    "base_pb2",
    "circuit_breaker_pb2",
    "cluster_pb2",
    "common_fault_pb2",
    "config_source_pb2",
    "duration",
    "duration_pb2",
    "endpoint_components_pb2",
    "endpoint_pb2",
    "fault_pb2",
    "hcm_pb2",
    "health_check_pb2",
    "http_protocol_options_pb2",
    "http_rbac_pb2",
    "listener_components_pb2",
    "listener_pb2",
    "metadata_matcher_pb2",
    "network_rbac_pb2",
    "outlier_detection_pb2",
    "pack",
    "path_pb2",
    "percent_pb2",
    "protocol_pb2",
    "rbac_pb2",
    "regex_pb2",
    "route_components_pb2",
    "route_pb2",
    "router_pb2",
    "sds",
    "secret_pb2",
    "string_pb2",
    "struct",
    "struct_pb2",
    "tcp_proxy_pb2",
    "tls_common_pb2",
    "tls_pb2",
    "u32",
    "wrappers_pb2",
]
