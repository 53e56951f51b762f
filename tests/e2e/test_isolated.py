"""`hyphal up --isolated`: the shop mesh in network namespaces with Kubernetes-style capture.

The apps have no proxy settings: iptables in each namespace hands their TCP to the sidecar
(UID 1337). Proves calls by service name, XFCC, the 95/5 split, RBAC, that plaintext to a
pod address never reaches the app, and that `hyphal down` leaves nothing of the mesh behind.
Runs as root only (skipped otherwise, or when `ip netns add` fails, with the reason).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shop_helpers import SHOP, hyphal, needs_planes, status

from hyphal.local import procs
from hyphal.local.rundir import MeshState, RunDir


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "isolated mode needs root (network namespaces, iptables)"
    name = f"hyphal-probe-{uuid.uuid4().hex[:6]}"
    try:
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                              timeout=10, check=False)
    except OSError as exc:
        return f"`ip netns add` cannot run: {exc}"
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)
    return None


_REASON = _netns_unavailable()
if _REASON:
    print(f"test_isolated skipped: {_REASON}", file=sys.stderr)

pytestmark = [pytest.mark.e2e, needs_planes, pytest.mark.timeout(120),
              pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

TD = "spiffe://cluster.local/ns/shop/sa"

# Runs inside a namespace with `python3 -c`: no proxy variables; names resolve via hosts.
CLIENT = r"""
import json, sys, urllib.error, urllib.request
calls = json.loads(sys.argv[1])
out = []
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for method, url, count in calls:
    for _ in range(count):
        req = urllib.request.Request(url, data=b"{}" if method == "POST" else None,
                                     method=method, headers={"content-type": "application/json"})
        try:
            with opener.open(req, timeout=5) as r:
                out.append([r.status, None, json.loads(r.read() or b"null")])
        except urllib.error.HTTPError as e:
            out.append([e.code, e.headers.get("x-hyphal-reason"), e.read().decode()[:200]])
print(json.dumps(out))
"""

# A raw plaintext HTTP request to HOST:PORT; prints the first bytes answered (or the error).
RAW = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"POST /process HTTP/1.1\r\nHost: payment:8080\r\nContent-Length: 2\r\n"
                  b"Connection: close\r\n\r\n{}")
        s.settimeout(5)
        data = b""
        while len(data) < 200:
            chunk = s.recv(200)
            if not chunk:
                break
            data += chunk
    print(repr(data[:200]))
except OSError as exc:
    print("error", exc)
"""


def in_ns(ns: str, *argv: str, uid: int | None = None) -> str:
    user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid else []
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    done = subprocess.run(["ip", "netns", "exec", ns, *user, *argv], capture_output=True,
                          text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def calls(ns: str, *batch: tuple[str, str, int]) -> list[list[Any]]:
    result: list[list[Any]] = json.loads(in_ns(ns, sys.executable, "-c", CLIENT,
                                               json.dumps(batch)))
    return result


def replica(state: MeshState, workload: str) -> dict[str, Any]:
    return next(r for r in state.replicas if r["workload"] == workload)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MeshState, Path]]:
    run = tmp_path_factory.mktemp("isolated") / "run"
    try:
        up = hyphal("up", "--isolated", str(SHOP), "--run-dir", str(run),
                    "--ready-timeout", "30")
        assert up.returncode == 0, f"hyphal up --isolated failed:\n{up.stdout}\n{up.stderr}"
        yield RunDir(run).require_state(), run
    finally:
        hyphal("down", "--run-dir", str(run))
        state = RunDir(run).read_state()
        if state is not None:
            left = [(p.pid, p.start_ticks) for p in state.processes if p.pid]
            if state.supervisor_pid:
                left.append((state.supervisor_pid, state.supervisor_start_ticks))
            procs.terminate_groups(left, 1.0)


def test_comes_up_in_namespaces(mesh: tuple[MeshState, Path]) -> None:
    state, run = mesh
    assert state.isolated is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for r in state.replicas:
        assert r["netns"] in listed and r["pod_ip"].startswith("10.233."), r
        assert Path(f"/etc/netns/{r['netns']}/hosts").is_file()
    view = status(run)
    assert {r["workload"] for r in view["replicas"]} == {
        "frontend", "product-v1", "product-v2", "order", "payment"}
    for r in view["replicas"]:
        assert r["app"]["alive"] and r["sidecar"]["alive"], r
        # the admin port stays inside the namespace; status reads it from there
        assert r["ready"] and r["cert_expiry"], r


def test_apps_without_proxy_settings_reach_services(mesh: tuple[MeshState, Path]) -> None:
    state, _ = mesh
    front = replica(state, "frontend")["netns"]
    (status_, _, body), = calls(front, ("GET", "http://127.0.0.1:8080/", 1))
    assert status_ == 200, body
    assert body["product"]["status"] == 200
    assert body["product"]["body"]["caller"].endswith(f"URI={TD}/frontend")
    assert body["order"]["status"] == 200
    payment = body["order"]["body"]["payment"]
    assert payment["status"] == 200 and payment["body"]["caller"].endswith(f"URI={TD}/order")
    (status_, _, body), = calls(front, ("GET", "http://product:8080/product/7", 1))
    assert status_ == 200 and f"URI={TD}/frontend" in body["caller"]


def test_canary_split_95_5(mesh: tuple[MeshState, Path]) -> None:
    state, _ = mesh
    out = calls(replica(state, "frontend")["netns"],
                ("GET", "http://product.shop.svc.cluster.local:8080/product/1", 300))
    versions = [body["version"] for code, _, body in out if code == 200]
    assert len(versions) == 300, [o for o in out if o[0] != 200][:3]
    v1 = versions.count("v1")
    assert 270 <= v1 <= 297, f"v1 {v1}/300, v2 {versions.count('v2')}/300"


def test_frontend_to_payment_denied(mesh: tuple[MeshState, Path]) -> None:
    state, _ = mesh
    (code, reason, _), = calls(replica(state, "frontend")["netns"],
                               ("POST", "http://payment:8080/process", 1))
    assert (code, reason) == (403, "rbac_denied")


def test_plaintext_to_pod_address_never_reaches_the_app(mesh: tuple[MeshState, Path]) -> None:
    state, _ = mesh
    front, pay = replica(state, "frontend")["netns"], replica(state, "payment")["pod_ip"]
    # As an ordinary user: captured by frontend's sidecar, which routes it by Host over mTLS
    # as frontend, whom payment's RBAC denies.
    captured = in_ns(front, sys.executable, "-c", RAW, pay, "8080", uid=1000)
    assert "HTTP/1.1 403" in captured and "rbac_denied" in captured, captured
    # As UID 1337 (not captured on the way out): payment's namespace captures it inbound,
    # and its inbound listener wants mTLS.
    direct = in_ns(front, sys.executable, "-c", RAW, pay, "8080", uid=1337)
    assert "HTTP/" not in direct, direct
    # From the host, the same.
    host = subprocess.run([sys.executable, "-c", RAW, pay, "8080"], capture_output=True,
                          text=True, timeout=30).stdout
    assert "HTTP/" not in host, host


def test_down_removes_everything(mesh: tuple[MeshState, Path]) -> None:
    state, run = mesh
    down = hyphal("down", "--run-dir", str(run))
    assert down.returncode == 0, down.stderr
    assert state.isolated is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for ns in state.isolated["netns"]:
        assert ns not in listed
        assert not Path(f"/etc/netns/{ns}").exists()
    for veth in state.isolated["veths"]:
        assert f" {veth}@" not in links and f" {veth}:" not in links
    assert state.isolated["bridge"] not in links
    for d in state.isolated["dirs"]:
        assert not Path(d).exists()
    final = RunDir(run).require_state()
    for p in final.processes:
        assert p.pid is None or not procs.group_alive(p.pid, p.start_ticks), p
    assert state.supervisor_pid is None or not procs.is_alive(
        state.supervisor_pid, state.supervisor_start_ticks)
    again = hyphal("down", "--run-dir", str(run))  # idempotent
    assert again.returncode == 0, again.stderr


def test_down_after_a_crashed_up_removes_the_network(tmp_path: Path) -> None:
    """mesh.json records the network before it exists: a supervisor killed mid-setup (here:
    setup done, nothing started) still leaves `down` everything to remove."""
    from hyphal.local.isolated import net_plan, record, setup
    from hyphal.local.model import load_mesh

    run = RunDir(tmp_path / "run")
    run.create()
    mesh = load_mesh(SHOP / "mesh")
    net = net_plan(mesh, run.root)
    run.write_state(MeshState(api="", state_dir="", supervisor_pid=None,
                              supervisor_start_ticks=None, phase="starting",
                              config_dir=str(SHOP), isolated=record(net).to_json()))
    try:
        setup(net, {p.replica: "shop" for p in net.pods}, out=lambda _: None)
        assert net.pods[0].netns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                   text=True).stdout
    finally:
        down = hyphal("down", "--run-dir", str(run.root))
    assert down.returncode == 0, down.stderr
    assert "isolated network" in down.stdout
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not any(p.netns in listed for p in net.pods)
    assert net.bridge not in links and not any(f" {p.veth}@" in links for p in net.pods)
    assert not any(Path(d).exists() for d in record(net).dirs)


def test_not_root_is_a_clear_error() -> None:
    import shutil
    import tempfile

    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    home = tempfile.mkdtemp(prefix="hyphal-nonroot-")
    os.chown(home, 1000, 1000)
    try:
        done = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups",
                               sys.executable, "-m", "hyphal", "up", "--isolated", str(SHOP),
                               "--run-dir", f"{home}/run"],
                              capture_output=True, text=True, timeout=60, check=False, env=env,
                              cwd="/")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "needs root" in done.stderr and "sudo" in done.stderr
