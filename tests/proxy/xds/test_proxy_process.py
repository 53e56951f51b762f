"""`hyphal proxy --bootstrap` as a real process against a real `hyphal control` on loopback:
certificate, full ACKed snapshot, listeners bound, /ready, rotation, SIGTERM; CA refusal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hyphal.local.ports import PortAllocator

_PORTS = PortAllocator()  # one per test process: never the same port twice

REPO = Path(__file__).resolve().parents[3]
HYPHAL = [sys.executable, "-m", "hyphal"]
pytestmark = pytest.mark.e2e


def free_ports(n: int) -> list[int]:
    """Below the kernel's ephemeral range (hyphal.local.ports): a port taken from it can be
    grabbed by any outbound connection before the test binds it ("address already in use")."""
    return _PORTS.allocate_many(n)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def control(tmp_path: Path) -> Iterator[dict[str, Any]]:
    state = tmp_path / "state"
    log = open(tmp_path / "control.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *HYPHAL,
            "control",
            "--config-dir",
            str(REPO / "examples/shop/mesh"),
            "--state-dir",
            str(state),
            "--xds-port",
            "0",
            "--xds-plaintext-port",
            "0",
            "--ca-port",
            "0",
            "--api-port",
            "0",
            "--cert-ttl",
            "6s",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 20
        ports_file = state / "ports.json"
        while not (ports_file.exists() and ports_file.read_text().strip().endswith("}")):
            assert proc.poll() is None, (tmp_path / "control.log").read_text()
            assert time.monotonic() < deadline, "control plane did not start"
            time.sleep(0.1)
        ports = json.loads(ports_file.read_text())
        yield {"state": state, "ports": ports, "tmp": tmp_path}
    finally:
        stop(proc)
        log.close()


def bootstrap(env: dict[str, Any], token: str) -> tuple[Path, dict[str, int]]:
    tmp: Path = env["tmp"]
    out_port, app_port, in_port, admin = free_ports(4)
    (tmp / "product.token").write_text(token)
    data = {
        "node": {
            "id": "product-v1-0.shop",
            "cluster": "product-v1",
            "metadata": {
                "NAMESPACE": "shop",
                "SERVICE_ACCOUNT": "product",
                "WORKLOAD_NAME": "product-v1",
                "LABELS": {"app": "product", "version": "v1"},
                "INSTANCE_IP": "127.0.0.1",
                "PROXY_MODE": "sidecar",
                "OUTBOUND_HTTP_PORT": out_port,
                "PORTS": [
                    {
                        "name": "http",
                        "port": 8080,
                        "protocol": "HTTP",
                        "app_port": app_port,
                        "inbound_port": in_port,
                    }
                ],
                "UPSTREAM_PORTS": {},
            },
        },
        "xds_address": f"127.0.0.1:{env['ports']['xds']}",
        "ca_address": f"127.0.0.1:{env['ports']['ca']}",
        "root_cert_file": str(env["state"] / "ca/root-cert.pem"),
        "token_file": str(tmp / "product.token"),
        "trust_domain": "cluster.local",
        "admin_port": admin,
        "access_log": "-",
        "cert_ttl_seconds": 6,
    }
    path = tmp / "bootstrap.json"
    path.write_text(json.dumps(data))
    return path, {"outbound": out_port, "inbound": in_port, "admin": admin}


def make_token(env: dict[str, Any]) -> str:
    return (
        subprocess.run(
            [
                *HYPHAL,
                "token",
                "create",
                "--state-dir",
                str(env["state"]),
                "--namespace",
                "shop",
                "--service-account",
                "product",
            ],
            check=True,
            capture_output=True,
            cwd=REPO,
            timeout=20,
        )
        .stdout.decode()
        .strip()
    )


def test_proxy_gets_cert_config_rotates_and_stops(control: dict[str, Any]) -> None:
    path, ports = bootstrap(control, make_token(control))
    log_path = control["tmp"] / "proxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*HYPHAL, "proxy", "--bootstrap", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ},
        )
        try:
            admin = f"http://127.0.0.1:{ports['admin']}"
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    if httpx.get(f"{admin}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            dump = httpx.get(f"{admin}/config_dump", timeout=2).json()
            assert {t["state"] for t in dump["xds"]["types"].values()} == {"acked"}
            assert dump["certificate"]["spiffe_id"] == "spiffe://cluster.local/ns/shop/sa/product"
            names = {lst["name"] for lst in dump["config"]["listeners"]}
            assert names == {"outbound_http", "inbound|8080"}
            for port in (ports["outbound"], ports["inbound"]):
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    pass  # the data plane bound the listeners the control plane described
            serial = dump["certificate"]["serial"]
            deadline = time.monotonic() + 10  # 6 s certificates rotate after ~3 s
            while True:
                cert = httpx.get(f"{admin}/config_dump", timeout=2).json()["certificate"]
                if cert["serial"] != serial:
                    break
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            assert cert["rotations"] >= 1
            assert httpx.get(f"{admin}/ready", timeout=2).status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            stop(proc)


def test_proxy_exits_non_zero_when_ca_refuses(control: dict[str, Any]) -> None:
    path, _ = bootstrap(control, "not-a-token")
    r = subprocess.run(
        [*HYPHAL, "proxy", "--bootstrap", str(path)],
        check=False,
        capture_output=True,
        cwd=REPO,
        timeout=30,
    )
    assert r.returncode == 3
    assert b"CA at 127.0.0.1:" in r.stderr and b"UNAUTHENTICATED" in r.stderr


def test_proxy_exits_2_on_invalid_bootstrap(tmp_path: Path) -> None:
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"node": {"id": "x", "metadata": {}}}))
    r = subprocess.run(
        [*HYPHAL, "proxy", "--bootstrap", str(bad)],
        check=False,
        capture_output=True,
        cwd=REPO,
        timeout=30,
    )
    assert r.returncode == 2
    assert b"node.metadata.NAMESPACE: Field required" in r.stderr
    assert b"xds_address: Field required" in r.stderr
