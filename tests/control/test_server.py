"""`hyphal control` wiring: start in-process, ports.json, readiness, status; start failures."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hyphal.control.server import ControlOptions, ControlPlane
from hyphal.control.store import StoreLoadError

pytestmark = pytest.mark.timeout(60)

SERVICE = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: product, namespace: shop}
spec:
  selector: {app: product}
  ports: [{name: http, port: 8080, protocol: HTTP}]
"""


def options(tmp_path: Path, **kw: object) -> ControlOptions:
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    return ControlOptions(
        config_dir=config_dir, state_dir=tmp_path / "state", xds_port=0,
        xds_plaintext_port=0, ca_port=0, api_port=0, **kw,  # type: ignore[arg-type]
    )


async def test_start_writes_ports_and_serves_ready_and_status(tmp_path: Path) -> None:
    opts = options(tmp_path)
    (opts.config_dir / "svc.yaml").write_text(SERVICE)  # type: ignore[operator]
    plane = ControlPlane(opts)
    try:
        ports = await plane.start()
        assert all(isinstance(ports[k], int) and ports[k] for k in ("api", "xds", "ca",
                                                                     "xds_plaintext"))
        written = json.loads((opts.state_dir / "ports.json").read_text())
        assert written == {**ports, "pid": os.getpid()}
        assert stat.S_IMODE(os.stat(opts.state_dir).st_mode) == 0o700
        token = (opts.state_dir / "admin-token").read_text().strip()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}") as client:
            ready = await client.get("/ready")
            assert ready.status_code == 200
            status = (await client.get("/api/v1/status",
                                       headers={"Authorization": f"Bearer {token}"})).json()
        assert status["ready"] is True and status["store"]["resources"] == 1
        assert status["ca"]["trust_domain"] == "cluster.local"
        assert status["ca"]["root_expires"] and len(status["ca"]["roots"]) == 1
        assert status["xds"]["connections"] == []
        for port in ports.values():  # every bound port accepts connections
            with socket.create_connection(("127.0.0.1", int(port or 0)), timeout=2):
                pass
    finally:
        await plane.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(ports["api"] or 0)), timeout=1)


async def test_a_config_dir_that_does_not_load_stops_the_start(tmp_path: Path) -> None:
    opts = options(tmp_path)
    bad = SERVICE.replace("port: 8080", "port: 99999")
    (opts.config_dir / "svc.yaml").write_text(bad)  # type: ignore[operator]
    plane = ControlPlane(opts)
    try:
        with pytest.raises(StoreLoadError) as info:
            await plane.start()
    finally:
        await plane.stop()
    assert info.value.errors[0].startswith("svc.yaml#1: spec.ports[0].port: ")


def test_cli_exits_1_naming_the_bad_file_and_the_busy_port(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "svc.yaml").write_text(SERVICE.replace("protocol: HTTP", "protocol: MONGO"))
    base = [sys.executable, "-m", "hyphal", "control", "--config-dir", str(config_dir),
            "--state-dir", str(tmp_path / "state"), "--xds-port", "0",
            "--xds-plaintext-port", "0", "--ca-port", "0"]
    out = subprocess.run([*base, "--api-port", "0"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 1
    assert "did not load, nothing was started" in out.stderr
    assert "  svc.yaml#1: spec.ports[0].protocol: MONGO is not supported" in out.stderr

    (config_dir / "svc.yaml").write_text(SERVICE)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([*base, "--api-port", str(port)], capture_output=True, text=True,
                             timeout=30, check=False)
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (--api-port)" in out.stderr


def test_cli_says_that_a_bad_applied_file_comes_from_an_earlier_apply(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    applied = tmp_path / "state" / "applied"
    applied.mkdir(parents=True)
    (applied / "service.shop.product.yaml").write_text(
        SERVICE.replace("protocol: HTTP", "protocol: MONGO"))
    out = subprocess.run(
        [sys.executable, "-m", "hyphal", "control", "--config-dir", str(config_dir),
         "--state-dir", str(tmp_path / "state"), "--xds-port", "0", "--xds-plaintext-port", "0",
         "--ca-port", "0", "--api-port", "0"],
        capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 1
    assert f"files under {applied}/ are resources applied with `hyphal apply` earlier" in out.stderr
    assert f"Remove them (rm -r {applied})" in out.stderr
