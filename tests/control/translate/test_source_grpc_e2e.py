"""End to end: MeshSnapshotSource behind the real AdsServer, grpcio's xDS client as the judge."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from translate_helpers import CA, load

from hyphal.control.translate.source import MeshSnapshotSource
from hyphal.control.xds.server import AdsServer

pytestmark = pytest.mark.e2e
CLIENT = Path(__file__).with_name("xds_count_client.py")
CALLS = 300


def mesh(port_a: int, port_b: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter, namespace: demo}}
spec:
  hosts: [greeter.example]
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {port_a}}}, labels: {{v: a}}}}
  - {{address: 127.0.0.1, ports: {{grpc: {port_b}}}, labels: {{v: b}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: greeter, namespace: demo}}
spec:
  host: greeter.example
  trafficPolicy: {{loadBalancer: {{consistentHash: {{httpHeaderName: x-user, maglev: {{}}}}}}}}
  subsets: [{{name: a, labels: {{v: a}}}}, {{name: b, labels: {{v: b}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter, namespace: demo}}
spec:
  hosts: [greeter.example]
  http:
  - route:
    - {{destination: {{host: greeter.example, subset: a}}, weight: 80}}
    - {{destination: {{host: greeter.example, subset: b}}, weight: 20}}
"""


async def _backend(answer: bytes) -> tuple[grpc.aio.Server, int]:
    async def hello(request: bytes, context: Any) -> bytes:
        return answer

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "demo.Greeter", {"Hello": grpc.unary_unary_rpc_method_handler(hello)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_grpc_client_follows_translated_weights_without_nacks() -> None:
    servers: list[grpc.aio.Server] = []
    proc: asyncio.subprocess.Process | None = None
    ads_server: AdsServer | None = None
    try:
        a, port_a = await _backend(b"a")
        b, port_b = await _backend(b"b")
        servers += [a, b]
        source = MeshSnapshotSource(load(mesh(port_a, port_b)), ca_bundle=CA)
        ads_server = AdsServer(source, debounce=0.05)
        ads = grpc.aio.server()
        ads_server.add_to_server(ads)
        ads_port = ads.add_insecure_port("127.0.0.1:0")
        servers.append(ads)
        await ads.start()
        await ads_server.start()
        bootstrap = {
            "xds_servers": [
                {
                    "server_uri": f"127.0.0.1:{ads_port}",
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": {"id": "client-1", "metadata": {"NAMESPACE": "demo", "PROXY_MODE": "grpc"}},
        }
        env = dict(os.environ, GRPC_XDS_BOOTSTRAP_CONFIG=json.dumps(bootstrap))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT),
            "greeter.example:50051",
            str(CALLS),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        raw = await asyncio.wait_for(proc.stdout.readline(), 40)
        assert raw, "the xDS client subprocess exited early (see its stderr)"
        counts = json.loads(raw)
        # Hashing on an absent header falls back to random picks within the weighted cluster
        # choice, so the 80/20 split holds.
        assert sum(counts.values()) == CALLS
        assert abs(counts.get("a", 0) / CALLS - 0.8) <= 0.08, counts
        [conn] = ads_server.connections()
        for t in conn.types:
            assert t.last_nack is None, t
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        for s in servers:
            await s.stop(None)
        if ads_server is not None:
            await ads_server.stop()
