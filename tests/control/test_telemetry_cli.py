"""The observability CLI's pure parts: check's analyzers, stat's table, graph's DOT, tap's lines."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from hyphal.cli import check, stat, tap
from hyphal.cli.check import Endpoint

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop" / "mesh"


def _res(kind: str, name: str, spec: dict[str, Any], ns: str = "shop") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}


WORKLOADS = [
    _res("Workload", "product-v1", {"labels": {"app": "product", "version": "v1"}}),
    _res("Workload", "payment", {"labels": {"app": "payment", "version": "v1"}}),
    _res("Service", "product", {"selector": {"app": "product"}}),
    _res("Service", "payment", {"selector": {"app": "payment"}}),
    _res("Service", "ghost", {"selector": {"app": "ghost"}}),
]


def test_fqdn_spellings() -> None:
    assert check.fqdn("product", "shop") == "product.shop.svc.cluster.local"
    assert check.fqdn("product.other", "shop") == "product.other.svc.cluster.local"
    assert check.fqdn("product.shop.svc.cluster.local", "x") == "product.shop.svc.cluster.local"
    assert check.fqdn("api.example.com", "shop") == "api.example.com"


def test_offline_findings_for_subset_host_and_policy() -> None:
    resources = [*WORKLOADS,
                 _res("DestinationRule", "product", {"host": "product", "subsets": [
                     {"name": "v1", "labels": {"version": "v1"}},
                     {"name": "v9", "labels": {"version": "v9"}}]}),
                 _res("VirtualService", "ghost", {"hosts": ["ghost"], "http": [
                     {"route": [{"destination": {"host": "ghost"}}]}]}),
                 _res("AuthorizationPolicy", "nobody", {"selector": {"matchLabels": {"app": "x"}}}),
                 _res("AuthorizationPolicy", "ns-wide", {"action": "DENY"}),
                 _res("AuthorizationPolicy", "pay",
                      {"selector": {"matchLabels": {"app": "payment"}}})]
    eps = check.endpoints_from_resources(resources)
    assert len(eps["product.shop.svc.cluster.local"]) == 1
    assert not eps["ghost.shop.svc.cluster.local"]
    found = check.analyze_resources(resources, eps)
    codes = sorted((f.code, f.resource) for f in found)
    assert codes == [("HYP0101", "VirtualService shop/ghost"),
                     ("HYP0102", "DestinationRule shop/product"),
                     ("HYP0103", "AuthorizationPolicy shop/nobody")]
    subset = next(f for f in found if f.code == "HYP0102")
    assert "'v9'" in subset.message and "version=v1" in subset.message


def test_live_registry_and_sync() -> None:
    status = {
        "registry": {"services": [{
            "service": "product.shop.svc.cluster.local:8080",
            "endpoints": [{"labels": {"app": "product", "version": "v2"}}]}]},
        "xds": {"connections": [
            {"node_id": "product-v1-0.shop", "cluster": "product-v1", "namespace": "shop",
             "proxy_mode": "sidecar", "types": [
                 {"type": "CDS", "sent_version": "a", "acked_version": "a", "last_nack": None}]},
            {"node_id": "payment-0.shop", "cluster": "payment", "namespace": "shop",
             "proxy_mode": "sidecar", "types": [
                 {"type": "LDS", "sent_version": "b", "acked_version": "a",
                  "last_nack": "listener inbound|8080: bad"}]},
        ]},
    }
    eps = check.endpoints_from_status(status)
    assert eps["product.shop.svc.cluster.local"][0].labels["version"] == "v2"
    dr = _res("DestinationRule", "product", {"host": "product", "subsets": [
        {"name": "v1", "labels": {"version": "v1"}}]})
    assert [f.code for f in check.analyze_resources([dr], eps)] == ["HYP0102"]
    sync = check.analyze_sync(status, WORKLOADS)
    assert ("error", "HYP0201", "payment-0.shop") in {(f.level, f.code, f.resource) for f in sync}
    assert [f.resource for f in sync if f.code == "HYP0202"] == ["Service shop/payment"]


def test_cert_expiry() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    status = {"ca": {"roots": [{"subject": "O=hyphal", "not_after": "2030-01-10T00:00:00+00:00"}]}}
    replicas = [{"workload": "a", "replica": 0, "cert_expiry": "2030-01-01T00:10:00+00:00"},
                {"workload": "b", "replica": 0, "cert_expiry": "2030-01-01T12:00:00+00:00"}]
    found = check.analyze_certs(status, replicas, now, dt.timedelta(days=30), dt.timedelta(hours=1))
    assert sorted(f.resource for f in found) == ["CA root O=hyphal", "a-0"]
    assert "in 10 minutes" in next(f.message for f in found if f.resource == "a-0")


def test_offline_shop_is_clean_and_endpoint_type() -> None:
    resources, errors = check._offline(SHOP, "cluster.local")
    assert not errors and len(resources) == 12
    eps = check.endpoints_from_resources(resources)
    assert check.analyze_resources(resources, eps) == []
    assert Endpoint("shop", {}) == Endpoint("shop", {})


def test_stat_table_and_graph_dot() -> None:
    view = {"kind": "deploy", "items": [
        {"name": "frontend", "meshed": 1, "success_rate": 1.0, "rps": 2.5,
         "latency_ms_p50": 3.2, "latency_ms_p95": 12.0, "latency_ms_p99": None,
         "tcp_connections": 2}]}
    text = stat.stat_table(view).splitlines()
    assert text[0].split() == ["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95",
                               "LATENCY_P99", "TCP_CONN"]
    assert text[1].split() == ["frontend", "1/1", "100.00%", "2.5rps", "3.2ms", "12ms", "-", "2"]
    graph = {"nodes": [{"kind": "workload", "name": "shop/frontend"},
                       {"kind": "service", "name": "product.shop.svc.cluster.local"}],
             "edges": [{"from": "frontend", "from_namespace": "shop",
                        "to": "product.shop.svc.cluster.local", "rps": 1.0,
                        "success_rate": 0.5, "latency_ms_p99": 7.0}]}
    dot = stat.graph_dot(graph)
    assert dot.startswith("digraph mesh {") and dot.endswith("}")
    assert '"shop/frontend" [shape=box];' in dot
    assert '"shop/frontend" -> "product.shop.svc.cluster.local"' in dot and "color=red" in dot


def test_tap_lines() -> None:
    assert tap.parse_duration("30s") == 30 and tap.parse_duration("250ms") == 0.25
    assert tap.parse_duration("2h") == 7200
    with pytest.raises(ValueError, match="30s"):
        tap.parse_duration("soon")
    assert tap.entry_of(b"2026-01-01 INFO hyphal.proxy: started") is None
    assert tap.entry_of(b"{not json") is None
    entry = tap.entry_of(b'{"start_time":"2026-01-01T00:00:00.000Z","request_id":"r1",'
                         b'"method":"POST","authority":"payment:8080","path":"/process",'
                         b'"listener":"inbound|8080","downstream_identity":"spiffe://x/sa/order",'
                         b'"status":200,"reason":"-","duration_ms":1.5,'
                         b'"upstream_service_time_ms":1.0}')
    assert entry is not None
    line = tap.format_entry(entry, "payment-0")
    assert line.startswith("2026-01-01T00:00:00.000Z payment-0 in  POST payment:8080/process")
    assert ":status=200" in line and "peer=spiffe://x/sa/order" in line


def test_tap_follower_waits_for_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    log.write_bytes(b'{"a": 1}\n{"b"')
    f = tap._Follower("x", log)
    assert list(f.lines()) == [b'{"a": 1}']
    with open(log, "ab") as fh:
        fh.write(b": 2}\n")
    assert list(f.lines()) == [b'{"b": 2}']
    f.close()


def test_tap_started_at_is_boot_time_plus_start_ticks(tmp_path: Path) -> None:
    """Without --since, tap starts at the mesh's start: an earlier run's requests stay out."""
    (tmp_path / "stat").write_text("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n")
    ticks = os.sysconf("SC_CLK_TCK")
    assert tap.started_at(30 * ticks, tmp_path) == 1700000030
    assert tap.started_at(None, tmp_path) is None
    assert tap.started_at(5, tmp_path / "missing") is None


def test_tap_without_since_shows_only_this_mesh_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An earlier `hyphal up` in the same run directory appended to the same sidecar log: its
    requests (inside the default 5-minute window) stay out unless --since asks for them."""
    import argparse
    import json
    import time

    from hyphal.local.rundir import MeshState, RunDir

    now = time.time()
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime "))
    started_ticks = int((now - 30 - btime) * os.sysconf("SC_CLK_TCK"))  # the mesh: 30 s ago
    log = tmp_path / "payment-0.sidecar.log"

    def line(age_s: float, rid: str) -> str:
        stamp = dt.datetime.fromtimestamp(now - age_s, dt.UTC).isoformat().replace("+00:00", "Z")
        return json.dumps({"start_time": stamp, "request_id": rid, "status": 200}) + "\n"

    log.write_text(line(120, "earlier-run") + line(10, "this-run"))
    (tmp_path / "run").mkdir()
    RunDir(tmp_path / "run").write_state(MeshState(
        api="", state_dir="", supervisor_pid=None, supervisor_start_ticks=started_ticks,
        phase="ready", config_dir="",
        replicas=({"workload": "payment", "replica": 0, "sidecar_log": str(log)},)))

    def tap_ids(since: str | None) -> list[str]:
        args = argparse.Namespace(workload="payment", replica=None, since=since, follow=False,
                                  output="json", max=0, run_dir=str(tmp_path / "run"))
        assert tap.run(args) == 0
        return [json.loads(out)["request_id"] for out in capsys.readouterr().out.splitlines()]

    assert tap_ids(None) == ["this-run"]
    assert tap_ids("5m") == ["earlier-run", "this-run"]
