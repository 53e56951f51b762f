"""Unit tests of the runner's pure parts: ports, plan (env, bootstrap), backoff, run directory."""

from __future__ import annotations

import stat
from pathlib import Path

from local_helpers import mesh, workload

from hyphal.local.backoff import Backoff, decide
from hyphal.local.model import PortSpec, ServiceSpec, env_name, workload_from_config
from hyphal.local.plan import plan_run
from hyphal.local.ports import PortAllocator, port_is_free
from hyphal.local.rundir import MeshState, ProcessRecord, RunDir


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    alloc = PortAllocator(seed=1)
    ports = alloc.allocate_many(50)
    assert len(set(ports)) == 50
    assert all(20000 <= p <= 32000 for p in ports)
    assert all(port_is_free(p) for p in ports)


def test_allocator_skips_ports_in_use() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        alloc = PortAllocator(low=busy, high=busy + 1, seed=0)
        got = {alloc.allocate() for _ in range(2)}
    assert busy not in got


def test_app_env_routes_service_names_through_the_sidecar(tmp_path: Path) -> None:
    w = workload("frontend", env={"GREETING": "hi"},
                 ports=(PortSpec("http", 8080), PortSpec("admin-api", 9090)))
    db = ServiceSpec("db", "shop", (PortSpec("tcp", 5432, "TCP"),), {"app": "db"})
    plan = plan_run(mesh(tmp_path, w, services=(db,)), tmp_path / "run", PortAllocator())
    (r,) = plan.replicas
    env = r.app_env()
    assert env["HTTP_PROXY"] == env["http_proxy"] == f"http://127.0.0.1:{r.outbound_http_port}"
    assert env["NO_PROXY"] == "localhost,127.0.0.1"  # no service names: they go through the proxy
    assert env["PORT"] == env["PORT_HTTP"] == str(r.ports[0].app_port)
    assert env["PORT_ADMIN_API"] == str(r.ports[1].app_port)
    assert env["HYPHAL_WORKLOAD"] == "frontend" and env["HYPHAL_REPLICA"] == "0"
    assert env["GREETING"] == "hi"
    local = r.upstream_ports["db.shop.svc.cluster.local:5432"]
    assert env["DB_SERVICE_HOST"] == "127.0.0.1"
    assert env["DB_SERVICE_PORT"] == env["DB_SERVICE_PORT_TCP"] == str(local)
    every = [plan.control.xds_port, plan.control.ca_port, plan.control.api_port,
             r.outbound_http_port, r.admin_port, local] + [
        p for b in r.ports for p in (b.app_port, b.inbound_port)]
    assert len(set(every)) == len(every)


def test_bootstrap_follows_the_conventions(tmp_path: Path) -> None:
    w = workload("product-v1")
    plan = plan_run(mesh(tmp_path, w), tmp_path / "run", PortAllocator(), cert_ttl_seconds=60)
    (r,) = plan.replicas
    boot = r.bootstrap(plan.control, 60)
    md = boot["node"]["metadata"]
    assert boot["node"]["id"] == "product-v1-0.shop"
    assert boot["node"]["cluster"] == "product-v1"
    assert md["NAMESPACE"] == "shop" and md["SERVICE_ACCOUNT"] == "product-v1"
    assert md["PROXY_MODE"] == "sidecar" and md["INSTANCE_IP"] == "127.0.0.1"
    assert md["LABELS"] == {"app": "product-v1"}
    assert md["PORTS"] == [{"name": "http", "port": 8080, "protocol": "HTTP",
                            "app_port": r.ports[0].app_port,
                            "inbound_port": r.ports[0].inbound_port}]
    assert boot["xds_address"] == f"127.0.0.1:{plan.control.xds_port}"
    assert boot["ca_address"] == f"127.0.0.1:{plan.control.ca_port}"
    assert boot["root_cert_file"].endswith("run/control/ca/root-cert.pem")
    assert boot["token_file"].endswith("run/tokens/product-v1-0.token")
    assert boot["admin_port"] == r.admin_port and boot["cert_ttl_seconds"] == 60
    assert r.identity == "spiffe://cluster.local/ns/shop/sa/product-v1"


def test_jobs_are_planned_after_long_running_workloads(tmp_path: Path) -> None:
    plan = plan_run(mesh(tmp_path, workload("aa-job", policy="Never"), workload("zz"),
                         workload("mm", replicas=2)), tmp_path / "r", PortAllocator())
    assert [r.key for r in plan.replicas] == ["mm-0", "mm-1", "zz-0", "aa-job-0"]


def test_backoff_is_exponential_capped_and_resets_after_a_long_run() -> None:
    b = Backoff(base=0.5, factor=2, cap=4, reset_after=10)
    assert [b.delay(n) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert b.next_streak(3, ran_for=0.2) == 4
    assert b.next_streak(3, ran_for=11) == 0


def test_restart_policies() -> None:
    b = Backoff()
    assert decide("Always", 0, 0, b).restart
    assert decide("OnFailure", 1, 0, b).restart
    assert decide("OnFailure", 0, 0, b).final_state == "completed"
    never = decide("Never", 3, 0, b)
    assert not never.restart and never.final_state == "failed"


def test_run_dir_is_private_and_mesh_json_round_trips(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.create()
    for d in (rd.root, rd.logs, rd.tokens, rd.bootstrap):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    rd.write_private(rd.tokens / "a.token", "secret")
    assert stat.S_IMODE((rd.tokens / "a.token").stat().st_mode) == 0o600
    state = MeshState(api="http://127.0.0.1:1", state_dir="/x", supervisor_pid=7,
                      supervisor_start_ticks=9, phase="ready", config_dir="/c",
                      processes=(ProcessRecord("control", "control", "/l", ("a", "b"), pid=3),))
    rd.write_state(state)
    assert rd.read_state() == state
    assert stat.S_IMODE(rd.mesh_file.stat().st_mode) == 0o600


def test_adapter_reads_config_style_objects() -> None:
    doc = {"metadata": {"name": "order", "namespace": "shop"},
           "spec": {"labels": {"app": "order"}, "serviceAccount": "order",
                    "ports": [{"port": 8080}], "command": ["python3"], "args": ["order.py"],
                    "env": [{"name": "A", "value": "1"}], "restartPolicy": "OnFailure"}}
    w = workload_from_config(doc)
    assert w.command == ("python3", "order.py") and w.env == {"A": "1"}
    assert w.ports == (PortSpec("http", 8080, "HTTP"),) and w.is_job
    assert env_name("product-v1") == "PRODUCT_V1"
