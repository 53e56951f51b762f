"""Admin endpoints over a real loopback socket: ready, healthz, config_dump, stats, quit."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent / "compile"))
import proxy_protos as P

from hyphal.proxy.admin import AdminServer, AdminSources, config_dump
from hyphal.proxy.certs import CertInfo
from hyphal.proxy.compile import Compiler, NodeContext
from hyphal.proxy.compile.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from hyphal.proxy.xds_client import TypeStatus, XdsStatus


def compiled() -> Any:
    c = Compiler(NodeContext(identity=P.SPIFFE, app_ports=((8080, 21002),)))
    pem, _ = P.make_root()
    acc = {
        CLUSTER: c.check(CLUSTER, [P.pack(P.eds_cluster())]),
        ENDPOINT: c.check(ENDPOINT, [P.pack(P.load_assignment())]),
        LISTENER: c.check(
            LISTENER, [P.pack(P.outbound_http_listener()), P.pack(P.inbound_http_listener())]
        ),
        ROUTE: c.check(ROUTE, [P.pack(P.route_configuration())]),
        SECRET: c.check(SECRET, [P.pack(P.rootca_secret(pem))]),
    }
    return c.assemble(acc, {CLUSTER: "v1"}, allow_missing=False)


async def test_admin_endpoints() -> None:
    state = {"ready": False}
    quit_called = asyncio.Event()
    snap = compiled()
    status = XdsStatus(
        connected=True,
        applied_count=1,
        last_applied_at=1.0,
        warming=(),
        types=(
            TypeStatus(
                ROUTE, "7", "n1", "nacked", "RouteConfiguration 'x': bad", ("outbound_http",), 1
            ),
        ),
    )
    cert = CertInfo(P.SPIFFE, "abc123", "2026-01-01T00:00:00", "2026-01-02T00:00:00", 0)
    sources = AdminSources(
        ready=lambda: (state["ready"], "" if state["ready"] else "no config applied yet"),
        config_dump=lambda: config_dump(status, snap.config, cert, 1),
        stats=lambda: "# TYPE istio_requests_total counter\nistio_requests_total 0\n",
        quit=quit_called.set,
    )
    admin = AdminServer(sources, port=0)
    port = await admin.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            r = await http.get("/ready")
            assert r.status_code == 503 and "no config applied yet" in r.text
            state["ready"] = True
            assert (await http.get("/ready")).status_code == 200
            assert (await http.get("/healthz")).status_code == 200
            dump = (await http.get("/config_dump")).json()
            assert dump["xds"]["types"]["RDS"]["state"] == "nacked"
            assert dump["xds"]["types"]["RDS"]["last_nack"] == "RouteConfiguration 'x': bad"
            assert dump["xds"]["types"]["RDS"]["version"] == "7"
            assert dump["certificate"] == {
                "spiffe_id": P.SPIFFE,
                "serial": "abc123",
                "not_before": "2026-01-01T00:00:00",
                "not_after": "2026-01-02T00:00:00",
                "rotations": 0,
                "root_fingerprint": "",
            }
            cfg = dump["config"]
            assert {lst["name"] for lst in cfg["listeners"]} == {"outbound_http", "inbound|8080"}
            assert cfg["clusters"][P.OUT]["endpoints"][0]["port"] == 21003
            assert cfg["clusters"][P.OUT]["tls"]["expected_sans"] == [P.SPIFFE]
            route = cfg["routes"]["outbound_http"]["virtual_hosts"][0]["routes"][1]
            assert route["match"]["path"]["value"] == r"/items/\d+"
            assert route["regex_rewrite"]["pattern"] == r"^/items/(\d+)$"
            s = await http.get("/stats/prometheus")
            assert s.status_code == 200 and "istio_requests_total 0" in s.text
            assert (await http.get("/nope")).status_code == 404
            assert (await http.get("/quitquitquit")).status_code == 405
            assert not quit_called.is_set()
            assert (await http.post("/quitquitquit")).status_code == 200
            await asyncio.wait_for(quit_called.wait(), 2)
    finally:
        await admin.close()
