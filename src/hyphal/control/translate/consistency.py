"""check_consistency(): a snapshot must never name a resource it does not contain."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from hyphal.control.translate import naming
from hyphal.control.translate.pb import Message, cluster_pb2, hcm_pb2, tcp_proxy_pb2, tls_pb2


def _hcms(listener: Message) -> Iterator[Message]:
    if listener.HasField("api_listener"):
        hcm = hcm_pb2.HttpConnectionManager()
        listener.api_listener.api_listener.Unpack(hcm)
        yield hcm
    for chain in listener.filter_chains:
        for f in chain.filters:
            if f.name == naming.HCM_FILTER:
                hcm = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                yield hcm


def _route_clusters(rc: Message) -> Iterator[str]:
    for vh in rc.virtual_hosts:
        for r in vh.routes:
            if not r.HasField("route"):
                continue
            a = r.route
            if a.cluster:
                yield a.cluster
            for cw in a.weighted_clusters.clusters:
                yield cw.name
            for m in a.request_mirror_policies:
                yield m.cluster


def check_consistency(resources: Mapping[str, Mapping[str, Message]]) -> list[str]:
    """Every dangling reference, as readable lines (empty when the snapshot is whole)."""
    problems: list[str] = []
    listeners = resources.get(naming.LISTENER_TYPE, {})
    routes = resources.get(naming.ROUTE_TYPE, {})
    clusters = resources.get(naming.CLUSTER_TYPE, {})
    clas = resources.get(naming.ENDPOINT_TYPE, {})
    secrets = resources.get(naming.SECRET_TYPE, {})
    for type_url, by_name in resources.items():
        for name, msg in by_name.items():
            got = msg.cluster_name if type_url == naming.ENDPOINT_TYPE else msg.name
            if got != name:
                problems.append(f"{type_url}: resource keyed {name!r} is named {got!r}")
    for lname, listener in sorted(listeners.items()):
        for hcm in _hcms(listener):
            if hcm.HasField("rds"):
                if hcm.rds.route_config_name not in routes:
                    problems.append(
                        f"listener {lname}: rds {hcm.rds.route_config_name!r} is not sent"
                    )
            elif hcm.HasField("route_config"):
                for c in _route_clusters(hcm.route_config):
                    if c not in clusters:
                        problems.append(f"listener {lname}: inline route names cluster {c!r}")
            if not hcm.http_filters or hcm.http_filters[-1].name != naming.ROUTER_FILTER:
                problems.append(f"listener {lname}: router is not the last HTTP filter")
        for chain in listener.filter_chains:
            for f in chain.filters:
                if f.name == naming.TCP_PROXY_FILTER:
                    tp = tcp_proxy_pb2.TcpProxy()
                    f.typed_config.Unpack(tp)
                    if tp.cluster not in clusters:
                        problems.append(f"listener {lname}: tcp_proxy cluster {tp.cluster!r}")
            if chain.HasField("transport_socket") and naming.ROOTCA not in secrets:
                problems.append(f"listener {lname}: TLS needs secret ROOTCA, not sent")
    for rname, rc in sorted(routes.items()):
        for c in _route_clusters(rc):
            if c not in clusters:
                problems.append(f"route {rname}: names cluster {c!r}, which is not sent")
    for cname, c in sorted(clusters.items()):
        if c.type == cluster_pb2.Cluster.EDS and cname not in clas:
            problems.append(f"cluster {cname}: EDS cluster without a ClusterLoadAssignment")
        if c.HasField("transport_socket"):
            ctx = tls_pb2.UpstreamTlsContext()
            c.transport_socket.typed_config.Unpack(ctx)
            sds = ctx.common_tls_context.combined_validation_context
            if sds.validation_context_sds_secret_config.name not in secrets:
                problems.append(f"cluster {cname}: validation secret is not sent")
    for name in sorted(clas):
        if name not in clusters:
            problems.append(f"ClusterLoadAssignment {name}: no such cluster")
    return problems
