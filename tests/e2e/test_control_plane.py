"""`hyphal control` as a real process, driven by the real CLI and by grpcio's own xDS client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]

BASE = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: product, namespace: shop}
spec:
  selector: {app: product}
  ports: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: product, namespace: shop}
spec:
  host: product
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"""


def product_vs(w1: int, w2: int, subset2: str = "v2", name: str = "product") -> str:
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: {name}, namespace: shop}}
        spec:
          hosts: [product]
          http:
            - route:
                - destination: {{host: product, subset: v1}}
                  weight: {w1}
                - destination: {{host: product, subset: {subset2}}}
                  weight: {w2}
        """)


class ControlPlane:
    """One `hyphal control` process at a time over fixed config and state dirs."""

    def __init__(self, config_dir: Path, state_dir: Path, log: Path) -> None:
        self.config_dir, self.state_dir, self.log = config_dir, state_dir, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, Any] = {}

    def start(self) -> None:
        assert self.proc is None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hyphal", "control",
                 "--config-dir", str(self.config_dir), "--state-dir", str(self.state_dir),
                 "--xds-port", "0", "--xds-plaintext-port", "auto", "--ca-port", "0",
                 "--api-port", "0", "--log-level", "info"],
                stdout=log, stderr=log, cwd=REPO,
            )
        deadline = time.monotonic() + 20
        ports_file = self.state_dir / "ports.json"
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"control plane exited:\n{self.log.read_text()}"
            try:
                ports = json.loads(ports_file.read_text())
            except (OSError, ValueError):
                ports = {}
            if ports.get("pid") == self.proc.pid and self._ready(ports["api"]):
                self.ports = ports
                return
            time.sleep(0.05)
        raise AssertionError(f"control plane not ready in 20s:\n{self.log.read_text()}")

    @staticmethod
    def _ready(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("control plane did not stop on SIGTERM within 10s") from None
        assert code == 0, f"control plane exited {code} on SIGTERM:\n{self.log.read_text()}"

    def hyphal(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HYPHAL_API": f"http://127.0.0.1:{self.ports['api']}",
               "HYPHAL_STATE_DIR": str(self.state_dir)}
        return subprocess.run(
            [sys.executable, "-m", "hyphal", *args], check=False, capture_output=True,
            text=True, env=env, cwd=cwd or self.config_dir.parent, timeout=30,
        )

    def status(self) -> dict[str, Any]:
        token = (self.state_dir / "admin-token").read_text().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports['api']}/api/v1/status",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            body: dict[str, Any] = json.load(r)
        return body


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    cp = ControlPlane(config_dir, tmp_path / "state", tmp_path / "control.log")
    try:
        yield cp
    finally:
        cp.stop()


def _weights(cp: ControlPlane, name: str = "product") -> list[int]:
    out = cp.hyphal("get", "vs", name, "-n", "shop", "-o", "json")
    assert out.returncode == 0, out.stderr
    return [d["weight"] for d in json.loads(out.stdout)["spec"]["http"][0]["route"]]


def test_apply_get_delete_restart_and_refused_changes(plane: ControlPlane, tmp_path: Path) -> None:
    (plane.config_dir / "base.yaml").write_text(BASE)
    plane.start()
    work = tmp_path / "work"
    work.mkdir()
    (work / "vs.yaml").write_text(product_vs(80, 20))

    out = plane.hyphal("apply", "-f", str(work / "vs.yaml"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("virtualservice.networking.istio.io/product created")
    out = plane.hyphal("apply", "-f", str(work))
    assert out.stdout.startswith("virtualservice.networking.istio.io/product unchanged")

    table = plane.hyphal("get", "dr", "-n", "shop").stdout.splitlines()
    assert table[0].split() == ["NAMESPACE", "NAME", "HOST", "SUBSETS", "SOURCE"]
    assert table[1].split() == ["shop", "product", "product", "v1,v2", "config-dir"]
    table = plane.hyphal("get", "virtualservices", "-A").stdout.splitlines()
    assert table[1].split()[:3] == ["shop", "product", "product"]

    # Restart: the applied VirtualService survives.
    plane.stop()
    plane.start()
    assert _weights(plane) == [80, 20]
    generation = plane.status()["store"]["generation"]

    # A change set with one bad document changes nothing, and says exactly what is wrong.
    catalog = BASE.split("---")[0].replace("product", "catalog")
    (work / "bad.yaml").write_text(catalog + "---\n" + product_vs(50, 50, subset2="v9"))
    out = plane.hyphal("apply", "-f", str(work / "bad.yaml"))
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        (
            f"error: {work / 'bad.yaml'}#2: spec.http[0].route[1].destination.subset: "
            "subset 'v9' of product.shop.svc.cluster.local is not defined by any DestinationRule"
        ),
        "nothing was applied",
    ]
    # A field hyphal does not know is caught by the CLI before anything is sent.
    (work / "typo.yaml").write_text(product_vs(50, 50).replace("weight: 50\n", "wieght: 50\n", 1))
    out = plane.hyphal("apply", "-f", str(work / "typo.yaml"))
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: {work / 'typo.yaml'}#1: spec.http[0].route[0]")
    assert "wieght" in out.stderr
    assert _weights(plane) == [80, 20]
    assert plane.hyphal("get", "svc", "catalog", "-n", "shop").returncode == 1
    assert plane.status()["store"]["generation"] == generation

    # Config-dir resources cannot be deleted through the API; applied ones can.
    out = plane.hyphal("delete", "dr", "product", "-n", "shop")
    assert out.returncode == 1
    assert str(plane.config_dir / "base.yaml") in out.stderr
    out = plane.hyphal("delete", "-f", str(work / "vs.yaml"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("virtualservice.networking.istio.io/product deleted")
    out = plane.hyphal("get", "vs", "product", "-n", "shop")
    assert out.returncode == 1 and "not found" in out.stderr
    assert not list((plane.state_dir / "applied").iterdir())

    # The config dir is watched: a new file is served without a restart.
    (plane.config_dir / "vs.yaml").write_text(product_vs(60, 40))
    deadline = time.monotonic() + 5
    while plane.hyphal("get", "vs", "product", "-n", "shop").returncode != 0:
        assert time.monotonic() < deadline, "config dir change not picked up within 5s"
        time.sleep(0.2)
    assert _weights(plane) == [60, 40]


def test_cli_says_where_it_looked_when_no_control_plane_answers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPHAL_")}
    out = subprocess.run([sys.executable, "-m", "hyphal", "get", "vs"], check=False,
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert out.returncode == 1
    assert "no control plane found: pass --api URL, set HYPHAL_API" in out.stderr
    out = subprocess.run([sys.executable, "-m", "hyphal", "get", "vs", "--api",
                          "http://127.0.0.1:9"], check=False, capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=30)
    assert out.returncode == 1
    assert "control plane at http://127.0.0.1:9 (from --api) is not reachable" in out.stderr


# ---- proxyless gRPC: grpcio's built-in xDS client against the control plane ----

GREETER = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter, namespace: demo}}
spec:
  hosts: [greeter.demo]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  endpoints:
    - {{address: 127.0.0.1, ports: {{grpc: {port_v1}}}, labels: {{version: v1}}}}
    - {{address: 127.0.0.1, ports: {{grpc: {port_v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: greeter, namespace: demo}}
spec:
  host: greeter.demo
  subsets:
    - {{name: v1, labels: {{version: v1}}}}
    - {{name: v2, labels: {{version: v2}}}}
"""


def greeter_vs(w1: int, w2: int) -> str:
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: greeter, namespace: demo}}
        spec:
          hosts: [greeter.demo]
          http:
            - route:
                - destination: {{host: greeter.demo, subset: v1}}
                  weight: {w1}
                - destination: {{host: greeter.demo, subset: v2}}
                  weight: {w2}
        """)


CLIENT = r'''
import json, sys, time
import grpc

target, calls = sys.argv[1], int(sys.argv[2])

def count(hello, n):
    out = {"v1": 0, "v2": 0}
    for _ in range(n):
        out[hello(b"", timeout=5).decode()] += 1
    return out

with grpc.insecure_channel("xds:///" + target) as channel:
    hello = channel.unary_unary("/demo.Greeter/Hello")
    hello(b"", timeout=15, wait_for_ready=True)
    print(json.dumps({"phase": "first", **count(hello, calls)}), flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(0)
    print(json.dumps({"phase": "polling"}), flush=True)
    start = time.monotonic()
    switched_at = None
    while time.monotonic() - start < 15:
        if count(hello, 20)["v2"] >= 12:  # 20/80 gives >= 12 of 20 with p > 0.99
            switched_at = time.time()
            break
    print(json.dumps({"phase": "switched", "at": switched_at}), flush=True)
    print(json.dumps({"phase": "after", **count(hello, calls)}), flush=True)
    sys.stdin.readline()  # stay connected until the parent has looked at /api/v1/status
'''


def _backend(reply: bytes) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: reply)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("demo.Greeter", {"Hello": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _read_json_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"xDS client said nothing within {timeout}s")
    finally:
        sel.close()
    line = proc.stdout.readline()
    assert line, f"xDS client exited ({proc.poll()}): {proc.stderr.read() if proc.stderr else ''}"
    result: dict[str, Any] = json.loads(line)
    return result


def test_grpc_xds_client_follows_weights_80_20_then_20_80(
    plane: ControlPlane, tmp_path: Path
) -> None:
    calls = 1000
    v1, port_v1 = _backend(b"v1")
    v2, port_v2 = _backend(b"v2")
    client: subprocess.Popen[str] | None = None
    try:
        (plane.config_dir / "greeter.yaml").write_text(
            GREETER.format(port_v1=port_v1, port_v2=port_v2))
        plane.start()
        (tmp_path / "vs.yaml").write_text(greeter_vs(80, 20))
        out = plane.hyphal("apply", "-f", str(tmp_path / "vs.yaml"))
        assert out.returncode == 0, out.stderr

        bootstrap = {
            "xds_servers": [{
                "server_uri": f"127.0.0.1:{plane.ports['xds_plaintext']}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }],
            "node": {"id": "e2e-greeter-client", "cluster": "e2e",
                     "metadata": {"NAMESPACE": "demo", "PROXY_MODE": "grpc"}},
        }
        (tmp_path / "client.py").write_text(CLIENT)
        env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(bootstrap)}
        client = subprocess.Popen(
            [sys.executable, str(tmp_path / "client.py"), "greeter.demo:50051", str(calls)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env,
        )
        first = _read_json_line(client, 40)
        assert first["phase"] == "first"
        assert first["v1"] + first["v2"] == calls
        assert abs(first["v1"] * 100 / calls - 80) <= 5, first

        # The client polls in batches of 20 from before the change; the change must show
        # within 1 s of `hyphal apply` returning (i.e. of the store committing it).
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
        assert _read_json_line(client, 10)["phase"] == "polling"
        (tmp_path / "vs.yaml").write_text(greeter_vs(20, 80))
        started = time.time()
        out = plane.hyphal("apply", "-f", str(tmp_path / "vs.yaml"))
        applied = time.time()
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("virtualservice.networking.istio.io/greeter configured")
        switched = _read_json_line(client, 20)
        assert switched["at"] is not None, "client never followed the 20/80 change"
        print(f"apply took {applied - started:.3f}s; client followed "
              f"{switched['at'] - applied:+.3f}s after it returned")
        assert switched["at"] - applied < 1.0, (switched, applied)
        after = _read_json_line(client, 40)
        assert abs(after["v1"] * 100 / calls - 20) <= 5, after

        # The status page shows the proxyless client and what it acked.
        conns = plane.status()["xds"]["connections"]
        mine = [c for c in conns if c["node_id"] == "e2e-greeter-client"]
        assert mine and {t["type"] for t in mine[0]["types"] if t["acked_version"]} >= {
            "LDS", "RDS", "CDS", "EDS"}
    finally:
        if client is not None:
            client.kill()
            client.wait()
        v1.stop(0)
        v2.stop(0)
