"""Compile xDS resources into the sidecar's runtime tables (pure functions, no I/O).

`Compiler.check` compiles every resource of one type (what decides ACK or NACK);
`Compiler.assemble` links the accepted sets of all types into one `Snapshot`: a `ProxyConfig`
plus the trust bundle from the `ROOTCA` Secret. The xDS client drives both.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from hyphal.proxy.compile.clusters import (
    CompiledCluster,
    compile_cluster,
    compile_load_assignment,
)
from hyphal.proxy.compile.common import Where
from hyphal.proxy.compile.listeners import compile_listener
from hyphal.proxy.compile.routes import compile_route_configuration
from hyphal.proxy.compile.types import (
    CLUSTER,
    ENDPOINT,
    KIND,
    LISTENER,
    ROOTCA,
    ROUTE,
    SECRET,
    CompileError,
)
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
    EndpointSpec,
    ListenerSpec,
    ProxyConfig,
    RouteTable,
)

__all__ = ["CompileError", "Compiler", "NodeContext", "Snapshot", "compile_secret"]

_PROTO: dict[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    SECRET: secret_pb2.Secret,
}
_T = TypeVar("_T")
_NAME_FIELD = {
    LISTENER: "name",
    ROUTE: "name",
    CLUSTER: "name",
    ENDPOINT: "cluster_name",
    SECRET: "name",
}


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What the compiler knows about this sidecar (from the bootstrap)."""

    identity: str = ""
    workload: str = "unknown"
    namespace: str = "default"
    # (declared port, app port) for each workload port: the `inbound|<port>||` clusters.
    app_ports: tuple[tuple[int, int], ...] = ()
    instance_ip: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One compiled, consistent config and the trust bundle it was compiled with."""

    config: ProxyConfig
    trust_bundle_pem: bytes | None
    missing: tuple[str, ...] = ()


def compile_secret(s: secret_pb2.Secret) -> bytes:
    """The `ROOTCA` Secret: PEM of every trusted root, checked to parse."""
    w = Where(SECRET, s.name)
    if s.name != ROOTCA:
        raise w.error("name", f"only the {ROOTCA!r} secret is accepted from the control plane")
    w.only(s, {"name", "validation_context"}, "")
    vc = s.validation_context
    w.only(vc, {"trusted_ca"}, "validation_context")
    kind = vc.trusted_ca.WhichOneof("specifier")
    if kind == "inline_bytes":
        pem = vc.trusted_ca.inline_bytes
    elif kind == "inline_string":
        pem = vc.trusted_ca.inline_string.encode()
    else:
        raise w.error("validation_context.trusted_ca", "needs inline_bytes or inline_string PEM")
    # Read by OpenSSL, as the data plane will load it (`TlsMaterial`): no `cryptography` in
    # the sidecar process (~10 MB RSS).
    store = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        store.load_verify_locations(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:
        raise w.error("validation_context.trusted_ca", f"not PEM certificates: {exc}") from None
    if not store.cert_store_stats()["x509"]:
        raise w.error("validation_context.trusted_ca", "holds no certificate")
    return bytes(pem)


def _decode(type_url: str, res: any_pb2.Any, index: int) -> Message:
    cls = _PROTO[type_url]
    kind = KIND[type_url]
    if res.type_url != type_url:
        raise CompileError(type_url, f"#{index}", "", f"a {kind} response holds a {res.type_url}")
    msg = cls()
    try:
        res.Unpack(msg)
    except DecodeError as exc:
        raise CompileError(type_url, f"#{index}", "", f"cannot decode: {exc}") from None
    return msg


class Compiler:
    """The xDS client's compiler: per-type checks, subscriptions, whole-set assembly."""

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    def check(self, type_url: str, resources: Sequence[any_pb2.Any]) -> Mapping[str, object]:
        out: dict[str, object] = {}
        for i, res in enumerate(resources):
            msg = _decode(type_url, res, i)
            name = getattr(msg, _NAME_FIELD[type_url])
            if not name:
                raise CompileError(type_url, f"#{i}", _NAME_FIELD[type_url], "empty name")
            if name in out:
                raise CompileError(type_url, name, "", "sent twice in one response")
            out[name] = self._compile_one(type_url, msg)
        return MappingProxyType(out)

    @staticmethod
    def _compile_one(type_url: str, msg: Message) -> object:
        if type_url == LISTENER:
            assert isinstance(msg, listener_pb2.Listener)
            return compile_listener(msg)
        if type_url == ROUTE:
            assert isinstance(msg, route_pb2.RouteConfiguration)
            return compile_route_configuration(msg)
        if type_url == CLUSTER:
            assert isinstance(msg, cluster_pb2.Cluster)
            return compile_cluster(msg)
        if type_url == ENDPOINT:
            assert isinstance(msg, endpoint_pb2.ClusterLoadAssignment)
            return compile_load_assignment(msg)
        assert isinstance(msg, secret_pb2.Secret)
        return compile_secret(msg)

    def wanted(self, accepted: Mapping[str, Mapping[str, object]]) -> Mapping[str, frozenset[str]]:
        eds = frozenset(
            c.eds_name for c in _values(accepted, CLUSTER, CompiledCluster) if c.eds_name
        )
        rds = frozenset(
            lst.route_config
            for lst in _values(accepted, LISTENER, ListenerSpec)
            if lst.route_config
        )
        return {ENDPOINT: eds, ROUTE: rds, SECRET: frozenset({ROOTCA})}

    def assemble(
        self,
        accepted: Mapping[str, Mapping[str, object]],
        versions: Mapping[str, str],
        *,
        allow_missing: bool,
    ) -> Snapshot | None:
        missing = [
            f"{KIND[t]}/{n}"
            for t, names in self.wanted(accepted).items()
            for n in sorted(names)
            if n not in accepted.get(t, {})
        ]
        if missing and not allow_missing:
            return None
        endpoints = accepted.get(ENDPOINT, {})
        clusters: dict[str, ClusterSpec] = {}
        for name, cc in accepted.get(CLUSTER, {}).items():
            assert isinstance(cc, CompiledCluster)
            spec = cc.spec
            if cc.eds_name is not None:
                eps = endpoints.get(cc.eds_name, ())
                assert isinstance(eps, tuple)
                spec = replace(spec, endpoints=eps)
            clusters[name] = spec
        listeners = tuple(sorted(_values(accepted, LISTENER, ListenerSpec), key=lambda s: s.name))
        self._add_inbound_clusters(listeners, clusters)
        routes = {n: r for n, r in accepted.get(ROUTE, {}).items() if isinstance(r, RouteTable)}
        version = ",".join(
            f"{KIND[t]}={versions.get(t, '')}" for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
        )
        config = ProxyConfig(
            version=version,
            listeners=listeners,
            routes=MappingProxyType(routes),
            clusters=MappingProxyType(clusters),
            identity=self._ctx.identity,
            workload=self._ctx.workload,
            namespace=self._ctx.namespace,
        )
        problems = config.validate()
        if problems:
            raise CompileError(LISTENER, "*", "", "; ".join(problems))
        roots = accepted.get(SECRET, {}).get(ROOTCA)
        assert roots is None or isinstance(roots, bytes)
        return Snapshot(config, roots, tuple(missing))

    def _add_inbound_clusters(
        self, listeners: tuple[ListenerSpec, ...], clusters: dict[str, ClusterSpec]
    ) -> None:
        """`inbound|<port>||` → 127.0.0.1:app_port, unless the control plane sent it (STATIC)."""
        app = dict(self._ctx.app_ports)
        for lst in listeners:
            if not lst.is_inbound:
                continue
            names: set[str] = set()
            if lst.tcp_cluster:
                names.add(lst.tcp_cluster)
            if lst.inline_routes is not None:
                for vh in lst.inline_routes.virtual_hosts:
                    for r in vh.routes:
                        if isinstance(r.action, ClusterAction):
                            names.update(c.name for c in r.action.clusters)
            for name in names:
                parts = name.split("|")
                if name in clusters or len(parts) != 4 or parts[0] != "inbound":
                    continue
                if not parts[1].isdigit() or int(parts[1]) not in app:
                    continue
                ep = EndpointSpec("127.0.0.1", app[int(parts[1])])
                clusters[name] = ClusterSpec(name=name, endpoints=(ep,), connect_timeout_s=1.0)


def _values(accepted: Mapping[str, Mapping[str, object]], type_url: str, cls: type[_T]) -> list[_T]:
    return [v for v in accepted.get(type_url, {}).values() if isinstance(v, cls)]
