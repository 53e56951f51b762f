"""End to end: `hyphal control --config-source kubernetes` against the fake API server serves
grpcio's proxyless xDS client a VirtualService read from the API, and follows its change."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_api import FakeApi

sys.path.insert(0, str(Path(__file__).parents[1] / "control" / "xds"))
from grpc_interop import grpc_interop, read_line

pytestmark = pytest.mark.e2e
CALLS = 60


def objects(port_a: int, port_b: int, subset: str) -> list[dict[str, Any]]:
    def pod(v: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"greeter-{v}", "namespace": "demo",
                             "labels": {"app": "greeter", "version": v}},
                "spec": {"serviceAccountName": "greeter",
                         "containers": [{"name": "greeter", "image": "demo/greeter"}]}}

    def eps(v: str, port: int) -> dict[str, Any]:
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"greeter-{v}", "namespace": "demo",
                             "labels": {"kubernetes.io/service-name": "greeter"}},
                "addressType": "IPv4", "ports": [{"name": "grpc", "port": port}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True},
                               "targetRef": {"kind": "Pod", "namespace": "demo",
                                             "name": f"greeter-{v}"}}]}

    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "greeter", "namespace": "demo"},
         "spec": {"selector": {"app": "greeter"},
                  "ports": [{"name": "grpc", "port": 50051, "protocol": "TCP"}]}},
        pod("a"), pod("b"), eps("a", port_a), eps("b", port_b),
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "greeter", "namespace": "demo"},
         "spec": {"host": "greeter", "subsets": [{"name": "a", "labels": {"version": "a"}},
                                                 {"name": "b", "labels": {"version": "b"}}]}},
        virtual_service(subset),
    ]


def virtual_service(subset: str) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "greeter", "namespace": "demo"},
            "spec": {"hosts": ["greeter"],
                     "http": [{"route": [{"destination": {"host": "greeter",
                                                          "subset": subset}}]}]}}


@pytest.fixture
def control(api: FakeApi, tmp_path: Path) -> Iterator[dict[str, Any]]:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyphal", "control", "--config-source", "kubernetes",
         "--kube-api", api.url, "--state-dir", str(state), "--xds-port", "auto",
         "--xds-plaintext-port", "auto", "--ca-port", "auto", "--api-port", "auto",
         "--webhook-port", "auto", "--debounce", "0.05"],
        env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    try:
        ports_file = state / "ports.json"
        deadline = time.monotonic() + 20
        while not ports_file.exists():
            assert proc.poll() is None, "hyphal control exited early (see stderr)"
            assert time.monotonic() < deadline, "hyphal control did not write ports.json"
            time.sleep(0.05)
        yield {**json.loads(ports_file.read_text()), "state": state}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


async def test_proxyless_client_follows_virtual_service_from_the_api(
    api: FakeApi, control: dict[str, Any], tmp_path: Path
) -> None:
    async with grpc_interop() as it:
        port_a, port_b = await it.backend(b"a"), await it.backend(b"b")
        for obj in objects(port_a, port_b, "a"):
            api.put(obj)
        it.ads_port = control["xds_plaintext"]
        node = {"id": "client-1", "metadata": {"NAMESPACE": "demo", "PROXY_MODE": "grpc"}}
        proc = await it.client("greeter.demo:50051", CALLS, node)
        first = await read_line(proc, 40)
        assert first == {"phase": "first", "a": CALLS, "b": 0}
        api.put(virtual_service("b"))
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        switched = await read_line(proc, 20)
        assert switched["phase"] == "switched" and switched["seconds"] < 10
        after = await read_line(proc, 20)
        assert after == {"phase": "after", "a": 0, "b": CALLS}

    # The injection webhook answers on its own HTTPS port, trusted through the mesh root.
    root = (control["state"] / "ca" / "root-cert.pem").read_text()
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE",
                          "namespace": "demo", "object": objects(1, 2, "a")[1]}}
    ctx = ssl.create_default_context(cadata=root)
    async with httpx.AsyncClient(verify=ctx) as http:
        answer = (await http.post(f"https://localhost:{control['webhook']}/inject",
                                  json=review, timeout=10)).json()
    assert answer["response"]["allowed"] and answer["response"]["patchType"] == "JSONPatch"
