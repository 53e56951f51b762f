"""What a data plane process does not import (RSS: each of these costs megabytes).

`cryptography` (~7-9 MB with what it pulls in): the data plane reads its own SPIFFE id with
`ssl`; key material reaches `ssl` through memory files, not `tempfile`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .mesh import Ca, spiffe


def modules_after(code: str) -> set[str]:
    """Modules imported by a fresh interpreter once it has run `code`."""
    code += "\nimport sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return set(out.split())


def test_mtls_material_does_not_import_cryptography(tmp_path: Path) -> None:
    ca = Ca.make()
    chain, key = ca.leaf(spiffe("shop", "product"))
    for name, data in (("chain", chain), ("key", key), ("ca", ca.pem)):
        (tmp_path / f"{name}.pem").write_bytes(data)
    code = (
        "from pathlib import Path\n"
        "import hyphal.proxy.dataplane\n"
        "from hyphal.proxy.transport.tls import TlsMaterial\n"
        f"d = Path({str(tmp_path)!r})\n"
        "pems = [(d / f'{n}.pem').read_bytes() for n in ('chain', 'key', 'ca')]\n"
        "m = TlsMaterial(*pems)\n"
        f"assert m.identity == {spiffe('shop', 'product')!r}, m.identity\n"
        "m.update(*pems)\n"
    )
    tops = {name.split(".")[0] for name in modules_after(code)}
    assert "cryptography" not in tops, "the data plane imports cryptography"
    assert "tempfile" not in tops, "TLS material goes through memfd files, not tempfile"


# A data plane serving HTTP/1.1 only, with mTLS between two of its listeners and RBAC on
# the inbound one: outbound -> mTLS -> inbound -> app, one request, then `sys.modules`.
# (Its own process: the test process has imported everything already.)
_HTTP1_SIDECAR = """
import asyncio, sys
from pathlib import Path
import uvloop
from hyphal.proxy.dataplane import DataPlane
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import (
    ClusterAction, ClusterSpec, DownstreamTls, EndpointSpec, ListenerKind, ListenerSpec,
    OrRule, AnyRule, PrincipalRule, ProxyConfig, RbacEngine, RbacPolicy, Route, RouteMatch,
    RouteTable, StringKind, StringMatch, UpstreamTls, VirtualHost)
from hyphal.proxy.transport.tls import TlsMaterial
from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import Stats

d = Path(sys.argv[1])
ME = "spiffe://cluster.local/ns/shop/sa/product"
HTTP2 = sys.argv[2] == "http2"

def routes(name, cluster):
    route = Route("default", RouteMatch(), ClusterAction.single(cluster))
    return RouteTable.build(name, (VirtualHost(name, ("*",), (route,)),))

async def app(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")
    await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(app, "127.0.0.1", 0)
    app_port = server.sockets[0].getsockname()[1]
    tls = TlsMaterial(*((d / f"{n}.pem").read_bytes() for n in ("chain", "key", "ca")))
    plane = DataPlane(ConfigHolder(), tls, AccessLog(str(d / "access.log")), Stats())
    rbac = RbacEngine(allow=(RbacPolicy("me", AnyRule(), OrRule((
        PrincipalRule(StringMatch(StringKind.EXACT, ME)),))),))
    inbound = ListenerSpec("inbound", "127.0.0.1", 0, ListenerKind.INBOUND_HTTP,
                           tls=DownstreamTls(), inline_routes=routes("inbound", "app"), rbac=rbac)
    app_cluster = ClusterSpec("app", (EndpointSpec("127.0.0.1", app_port),))
    clusters = {"app": app_cluster}
    if HTTP2:
        clusters["grpc"] = ClusterSpec("grpc", (EndpointSpec("127.0.0.1", app_port),), http2=True)
    await plane.apply(ProxyConfig("1", (inbound,), {}, clusters, identity=ME))
    if HTTP2:  # loaded with the config, before any request
        assert "hyphal.proxy.h2.upstream" in sys.modules and plane.h2_pool is not None
    peer = ClusterSpec("peer", (EndpointSpec("127.0.0.1", plane.port_of("inbound")),),
                       tls=UpstreamTls("peer", frozenset({ME})))
    outbound = ListenerSpec("outbound", "127.0.0.1", 0, ListenerKind.OUTBOUND_HTTP,
                            route_config="outbound")
    table = {"outbound": routes("outbound", "peer")}
    await plane.apply(ProxyConfig("2", (inbound, outbound), table, {**clusters, "peer": peer},
                                  identity=ME))
    reader, writer = await asyncio.open_connection("127.0.0.1", plane.port_of("outbound"))
    writer.write(b"GET / HTTP/1.1\\r\\nHost: peer\\r\\n\\r\\n")
    head = await asyncio.wait_for(reader.readuntil(b"\\r\\n\\r\\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    writer.close()
    await plane.close()
    server.close()

uvloop.run(main())
print(" ".join(sorted(sys.modules)))
"""

_NOT_FOR_HTTP1 = (
    "h2", "hpack", "hyperframe", "hyphal.proxy.h2.server", "hyphal.proxy.h2.upstream",
    "hyphal.proxy.h2.bridge", "hyphal.proxy.h2.stream", "hyphal.proxy.filters.jwt",
    "hyphal.proxy.filters.ratelimit", "cryptography", "tempfile", "urllib.request",
)


def _serve_one_request(tmp_path: Path, kind: str) -> set[str]:
    ca = Ca.make()
    chain, key = ca.leaf(spiffe("shop", "product"))
    for name, data in (("chain", chain), ("key", key), ("ca", ca.pem)):
        (tmp_path / f"{name}.pem").write_bytes(data)
    out = subprocess.run(
        [sys.executable, "-c", _HTTP1_SIDECAR, str(tmp_path), kind],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_http1_only_sidecar_does_not_import_h2_or_policy_filters(tmp_path: Path) -> None:
    loaded = _serve_one_request(tmp_path, "http1")
    assert [m for m in _NOT_FOR_HTTP1 if m in loaded] == []


def test_a_config_with_an_http2_cluster_loads_h2_when_applied(tmp_path: Path) -> None:
    loaded = _serve_one_request(tmp_path, "http2")  # the script asserts it before any request
    assert {"h2", "hyphal.proxy.h2.upstream", "hyphal.proxy.h2.bridge"} <= loaded
