"""Isolated mode's run plan (pure): bootstrap metadata for capture, apps without proxy settings."""

from __future__ import annotations

from pathlib import Path

from hyphal.local.isolated import net_plan, sidecar_argv
from hyphal.local.model import load_mesh
from hyphal.local.plan import plan_run
from hyphal.local.ports import PortAllocator

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"


def test_isolated_plan_bootstrap_and_env(tmp_path: Path) -> None:
    mesh = load_mesh(SHOP / "mesh")
    net = net_plan(mesh, tmp_path)
    plan = plan_run(mesh, tmp_path, PortAllocator(), net=net)
    assert plan.control.host == net.bridge_ip
    assert plan.control.api.startswith(f"http://{net.bridge_ip}:")
    assert "--host" in plan.control.command(("hyphal",), SHOP)
    front = next(r for r in plan.replicas if r.workload.name == "frontend")
    assert front.pod is not None
    boot = front.bootstrap(plan.control, 60)
    md = boot["node"]["metadata"]
    assert md["INSTANCE_IP"] == front.pod.ip and md["INTERCEPTION_MODE"] == "REDIRECT"
    assert md["OUTBOUND_HTTP_PORT"] == 15001
    assert md["SERVICE_VIPS"]["product.shop.svc.cluster.local"].startswith("10.233.")
    assert md["PORTS"] == [{"name": "http", "port": 8080, "protocol": "HTTP",
                            "app_port": 8080, "inbound_port": 8080}]
    assert boot["xds_address"] == f"{net.bridge_ip}:{plan.control.xds_port}"
    assert boot["root_cert_file"].startswith("/run/hyphal/")
    env = front.app_env()
    assert not {k for k in env if "proxy" in k.lower()} and env["PORT"] == "8080"
    assert sidecar_argv("ns", ["x"])[:5] == ("ip", "netns", "exec", "ns", "setpriv")


def test_plain_plan_unchanged(tmp_path: Path) -> None:
    plan = plan_run(load_mesh(SHOP / "mesh"), tmp_path, PortAllocator())
    assert plan.net is None and plan.control.api.startswith("http://127.0.0.1:")
    r = plan.replicas[0]
    assert r.pod is None and "HTTP_PROXY" in r.app_env()
    assert r.bootstrap(plan.control, 60)["node"]["metadata"]["INSTANCE_IP"] == "127.0.0.1"
