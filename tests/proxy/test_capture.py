"""Transparent capture: REDIRECT nodes get virtualOutbound/virtualInbound (use_original_dst)
and unbound target listeners; the sidecar compiles them; `pick` hands each captured
connection to the listener its original destination names."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hyphal.config import ResourceSet
from hyphal.config.loader import load_text
from hyphal.control.registry import ProxyNode, Registry
from hyphal.control.registry.node import NodeMetadataError
from hyphal.control.translate import capture as tcapture
from hyphal.control.translate import naming
from hyphal.control.translate.inputs import MeshIndex
from hyphal.control.translate.snapshot import translate
from hyphal.proxy.capture import UnboundServer, pick, serve
from hyphal.proxy.compile.clusters import compile_cluster
from hyphal.proxy.compile.listeners import compile_listener
from hyphal.proxy.compile.types import CompileError
from hyphal.proxy.runtime.tables import ListenerKind, ListenerSpec

CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
MESH = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: product, namespace: shop}
spec: {selector: {app: product}, ports: [{name: http, port: 8080}]}
---
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: db, namespace: shop}
spec: {selector: {app: db}, ports: [{name: tcp, port: 5432, protocol: TCP}]}
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: db, namespace: shop}
spec: {labels: {app: db}, serviceAccount: db, ports: [{name: tcp, port: 5432, protocol: TCP}]}
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: product, namespace: shop}
spec: {labels: {app: product}, serviceAccount: product, ports: [{name: http, port: 8080}]}
"""
DB = "db.shop.svc.cluster.local"


def node(name: str, app: str, ip: str, port: int, proto: str, **extra: Any) -> ProxyNode:
    md: dict[str, Any] = {
        "NAMESPACE": "shop", "SERVICE_ACCOUNT": app, "WORKLOAD_NAME": name,
        "LABELS": {"app": app}, "INSTANCE_IP": ip, "PROXY_MODE": "sidecar",
        "OUTBOUND_HTTP_PORT": 15001, "INTERCEPTION_MODE": "REDIRECT",
        "PORTS": [{"name": "p", "port": port, "protocol": proto, "app_port": port,
                   "inbound_port": port}],
    }
    md.update(extra)
    return ProxyNode.from_metadata(f"{name}-0.shop", name, md)


def translated(n: ProxyNode, *others: ProxyNode) -> dict[str, dict[str, Any]]:
    rs = ResourceSet(load_text(MESH, "mesh.yaml"))
    records, static = MeshIndex.build(rs).registry_inputs()
    reg = Registry(records, static)
    for o in (n, *others):
        reg.add_node(o)
    return translate(rs, reg.view(), n, CA, "cluster.local")


def compiled(out: dict[str, dict[str, Any]]) -> dict[str, ListenerSpec]:
    return {name: compile_listener(m) for name, m in out[naming.LISTENER_TYPE].items()}


def test_redirect_node_gets_capture_listeners_that_the_sidecar_compiles() -> None:
    product = node("product", "product", "10.233.0.2", 8080, "HTTP",
                   SERVICE_VIPS={DB: "10.233.1.2"})
    db = node("db", "db", "10.233.0.3", 5432, "TCP")
    specs = compiled(translated(product, db))
    vout, vin = specs[tcapture.VIRTUAL_OUTBOUND], specs[tcapture.VIRTUAL_INBOUND]
    assert (vout.host, vout.port, vout.use_original_dst, vout.bind_to_port) == (
        "0.0.0.0", 15001, True, True)
    assert vout.kind is ListenerKind.OUTBOUND_HTTP and vout.route_config == naming.OUTBOUND_HTTP
    assert (vin.port, vin.kind, vin.tcp_cluster) == (
        15006, ListenerKind.INBOUND_TCP, tcapture.BLACKHOLE_CLUSTER)
    # outbound_http on 15001 would clash with virtualOutbound: replaced by it
    assert naming.OUTBOUND_HTTP not in specs
    inbound = specs["inbound|8080"]
    assert (inbound.host, inbound.port, inbound.bind_to_port) == ("10.233.0.2", 8080, False)
    assert inbound.tls is not None and inbound.tls.require_client_cert
    tcp = specs[f"outbound|5432||{DB}"]
    assert (tcp.host, tcp.port, tcp.bind_to_port) == ("10.233.1.2", 5432, False)
    assert tcp.additional_addresses == (("10.233.0.3", 5432),)  # the db endpoint itself
    assert tcp.tcp_cluster == f"outbound|5432||{DB}"


def test_blackhole_cluster_compiles_with_no_endpoints() -> None:
    compiled_cluster = compile_cluster(tcapture.blackhole_cluster())
    assert compiled_cluster.spec.endpoints == ()


def test_nodes_without_redirect_are_unchanged() -> None:
    plain = ProxyNode.from_metadata("p-0.shop", "p", {
        "NAMESPACE": "shop", "PROXY_MODE": "sidecar", "OUTBOUND_HTTP_PORT": 21001,
        "LABELS": {"app": "product"},
        "PORTS": [{"name": "p", "port": 8080, "protocol": "HTTP", "app_port": 21002,
                   "inbound_port": 21003}]})
    specs = compiled(translated(plain))
    assert tcapture.VIRTUAL_OUTBOUND not in specs and naming.OUTBOUND_HTTP in specs
    assert specs["inbound|8080"].bind_to_port and specs["inbound|8080"].port == 21003


def test_bad_interception_mode_is_refused_naming_the_key() -> None:
    with pytest.raises(NodeMetadataError, match="INTERCEPTION_MODE"):
        ProxyNode.from_metadata("x", "x", {"NAMESPACE": "a", "PROXY_MODE": "sidecar",
                                           "INTERCEPTION_MODE": "TPROXY"})


def test_compiler_refuses_an_unbound_capture_listener() -> None:
    lst = tcapture.virtual_inbound()
    lst.bind_to_port.value = False
    with pytest.raises(CompileError, match="bind_to_port"):
        compile_listener(lst)


def spec(name: str, host: str, port: int, kind: ListenerKind, **kw: Any) -> ListenerSpec:
    return ListenerSpec(name=name, host=host, port=port, kind=kind, tcp_cluster="c", **kw)


VOUT = spec("virtualOutbound", "0.0.0.0", 15001, ListenerKind.OUTBOUND_HTTP,
            use_original_dst=True, route_config="outbound_http")
VIN = spec("virtualInbound", "0.0.0.0", 15006, ListenerKind.INBOUND_TCP, use_original_dst=True)
IN_8080 = spec("inbound|8080", "10.0.0.2", 8080, ListenerKind.INBOUND_HTTP, bind_to_port=False)
IN_ANY = spec("inbound|9000", "0.0.0.0", 9000, ListenerKind.INBOUND_TCP, bind_to_port=False)
DB_OUT = spec("outbound|5432||db", "10.1.0.9", 5432, ListenerKind.OUTBOUND_TCP,
              bind_to_port=False, additional_addresses=(("10.0.0.7", 5432),))
BOUND = spec("outbound|8080||x", "10.0.0.2", 8080, ListenerKind.OUTBOUND_TCP)
ALL = (VOUT, VIN, IN_8080, IN_ANY, DB_OUT, BOUND)


@pytest.mark.parametrize(("capture", "dst", "expected"), [
    (VIN, ("10.0.0.2", 8080), IN_8080),          # exact address
    (VIN, ("10.0.0.2", 9000), IN_ANY),           # 0.0.0.0:<port>
    (VIN, ("10.0.0.2", 7777), VIN),              # undeclared port: the black hole chain
    (VIN, ("10.1.0.9", 5432), VIN),              # outbound listeners never serve inbound
    (VOUT, ("10.1.0.9", 5432), DB_OUT),          # service VIP
    (VOUT, ("10.0.0.7", 5432), DB_OUT),          # an endpoint address
    (VOUT, ("10.0.0.2", 8080), VOUT),            # bound listeners never take hand-offs
    (VOUT, ("10.9.9.9", 80), VOUT),              # HTTP by Host on the capture chain
    (VOUT, None, VOUT),                          # not redirected
])
def test_pick(capture: ListenerSpec, dst: tuple[str, int] | None,
              expected: ListenerSpec) -> None:
    assert pick(ALL, capture, dst) is expected


async def test_unbound_listener_has_no_socket_and_capture_listener_binds() -> None:
    from hyphal.proxy.dataplane import DataPlane
    from hyphal.proxy.runtime.holder import ConfigHolder
    from hyphal.telemetry.accesslog import AccessLog
    from hyphal.telemetry.stats import Stats

    dp = DataPlane(ConfigHolder(), None, AccessLog(None), Stats())
    unbound = await serve(dp._context(IN_8080))
    assert isinstance(unbound, UnboundServer) and unbound.sockets == ()
    ctx = dp._context(spec("cap", "127.0.0.1", 0, ListenerKind.INBOUND_TCP,
                           use_original_dst=True))
    server = await serve(ctx)
    port = server.sockets[0].getsockname()[1]
    # not redirected: served by the capture listener's own chain (a black hole: no
    # endpoints), so the connection is closed
    r, w = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(r.read(), 3.0) == b""
    w.close()
    server.close()
    await server.wait_closed()
