"""End to end: MeshSnapshotSource behind the real AdsServer, grpcio's xDS client as the judge."""

from __future__ import annotations

import pytest
from grpc_interop import grpc_interop, read_line

from hyphal.config import ResourceSet
from hyphal.config.loader import load_text
from hyphal.control.translate.source import MeshSnapshotSource

pytestmark = pytest.mark.e2e
CALLS = 300
CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def _load(text: str) -> ResourceSet:
    return ResourceSet(load_text(text, "mesh.yaml"))


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


async def test_grpc_client_follows_translated_weights_without_nacks() -> None:
    async with grpc_interop() as it:
        port_a = await it.backend(b"a")
        port_b = await it.backend(b"b")
        source = MeshSnapshotSource(_load(mesh(port_a, port_b)), ca_bundle=CA)
        ads_server = await it.serve(source)
        node = {"id": "client-1", "metadata": {"NAMESPACE": "demo", "PROXY_MODE": "grpc"}}
        counts = await read_line(await it.client("greeter.example:50051", CALLS, node), 40)
        # Hashing on an absent header falls back to random picks within the weighted cluster
        # choice, so the 80/20 split holds.
        assert counts["a"] + counts["b"] == CALLS
        assert abs(counts["a"] / CALLS - 0.8) <= 0.08, counts
        # The client stays connected (waiting on its stdin) while its stream is inspected.
        [conn] = ads_server.connections()
        for t in conn.types:
            assert t.last_nack is None, t
