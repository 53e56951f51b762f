"""xDS type URLs and the compile error that a NACK carries."""

from __future__ import annotations

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Short names used in logs, NACK messages and /config_dump.
SHORT: dict[str, str] = {
    LISTENER: "Listener",
    ROUTE: "RouteConfiguration",
    CLUSTER: "Cluster",
    ENDPOINT: "ClusterLoadAssignment",
    SECRET: "Secret",
}
KIND: dict[str, str] = {
    LISTENER: "LDS",
    ROUTE: "RDS",
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    SECRET: "SDS",
}

# Types the sidecar subscribes to by wildcard; the others by the names the first two mention.
WILDCARD_TYPES: tuple[str, ...] = (CLUSTER, LISTENER)
ALL_TYPES: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)

ROOTCA = "ROOTCA"
DEFAULT_SECRET = "default"


class CompileError(Exception):
    """A resource cannot be compiled; the message names the resource, the field and why."""

    def __init__(self, type_url: str, name: str, path: str, problem: str) -> None:
        self.type_url = type_url
        self.name = name
        self.path = path
        self.problem = problem
        kind = SHORT.get(type_url, type_url)
        where = f"{kind} {name!r}" + (f": {path}" if path else "")
        super().__init__(f"{where}: {problem}")
