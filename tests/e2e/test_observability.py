"""Observability end to end on the shop: traces across hops, stat, graph, tap and check.

The shop comes up with `hyphal up` and every sidecar sampling 100% into one OTLP/JSON file
(HYPHAL_TRACE_* in the environment the sidecars inherit). Calls enter through order's
sidecar with a `traceparent`; the apps copy trace headers onto their own calls, so one
trace runs order(out) → frontend → order → payment.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shop_helpers import SHOP, hyphal, mesh_up, needs_planes, status

from hyphal.local.client import MeshClient
from hyphal.local.observe import find_replica
from hyphal.local.rundir import MeshState

pytestmark = [pytest.mark.e2e, needs_planes, pytest.mark.timeout(240)]

Shop = tuple[MeshState, Path, Path]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    base = tmp_path_factory.mktemp("obs")
    spans = base / "spans.jsonl"
    saved = {k: os.environ.get(k) for k in ("HYPHAL_TRACE_SAMPLING", "HYPHAL_TRACE_OTLP_FILE")}
    os.environ["HYPHAL_TRACE_SAMPLING"] = "1"
    os.environ["HYPHAL_TRACE_OTLP_FILE"] = str(spans)
    try:
        with mesh_up(SHOP, base / "run") as state:
            yield state, base / "run", spans
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _synced(run: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        view = status(run)
        if all(r["ready"] and r["sync"] == "SYNCED" for r in view["replicas"]):
            return
        assert time.monotonic() < deadline, [(r["workload"], r["sync"]) for r in view["replicas"]]
        time.sleep(0.2)


def _spans(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        for rs in json.loads(line)["resourceSpans"]:
            attrs = {a["key"]: a["value"]["stringValue"] for a in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    out.append({**s, "service": attrs["service.name"]})
    return out


def _drive(state: MeshState, calls: int, trace_ids: list[str]) -> None:
    port = int(find_replica(state, "order", 0)["outbound_http_port"])
    with MeshClient(port) as c:
        deadline = time.monotonic() + 20
        while c.get("http://frontend:8080/health").status != 200:
            assert time.monotonic() < deadline, "frontend never answered"
            time.sleep(0.2)
        for i in range(calls):
            headers = {}
            if i < len(trace_ids):
                headers["traceparent"] = f"00-{trace_ids[i]}-{'ab' * 8}-01"
            r = c.request("GET", "http://frontend:8080/", headers=headers)
            assert r.status == 200, (r.status, r.body[:300])


def test_trace_links_client_and_server_spans_across_hops(shop: Shop) -> None:
    state, run, spans_file = shop
    _synced(run)
    trace_id = secrets.token_hex(16)
    _drive(state, 3, [trace_id])
    deadline = time.monotonic() + 10
    while True:  # spans are flushed every second
        spans = [s for s in _spans(spans_file) if s["traceId"] == trace_id]
        if len(spans) >= 8:
            break
        assert time.monotonic() < deadline, f"only {len(spans)} spans: {spans}"
        time.sleep(0.3)
    by_id = {s["spanId"]: s for s in spans}
    kinds = {(s["service"], s["kind"]) for s in spans}
    # order's outbound client span is the child of the caller's span ab..ab
    entry = [s for s in spans if s.get("parentSpanId") == "ab" * 8]
    assert [(s["service"], s["kind"]) for s in entry] == [("order", 3)], entry
    # frontend's server span is the child of that client span
    front = [s for s in spans if s["service"] == "frontend" and s["kind"] == 2]
    assert len(front) == 1 and front[0]["parentSpanId"] == entry[0]["spanId"]
    # payment's server span: parent chain payment(server) -> order(client) -> order(server)
    #   -> frontend(client) -> frontend(server): two hops beyond the entry
    pay = [s for s in spans if s["service"] == "payment" and s["kind"] == 2]
    assert len(pay) == 1, kinds
    chain = [pay[0]]
    while chain[-1].get("parentSpanId") in by_id:
        chain.append(by_id[chain[-1]["parentSpanId"]])
    assert [(s["service"], s["kind"]) for s in chain] == [
        ("payment", 2), ("order", 3), ("order", 2), ("frontend", 3), ("frontend", 2),
        ("order", 3)]
    attrs = {a["key"]: a["value"] for a in pay[0]["attributes"]}
    assert attrs["http.request.method"] == {"stringValue": "POST"}
    assert attrs["url.path"] == {"stringValue": "/process"}
    assert attrs["http.response.status_code"] == {"intValue": "200"}
    assert attrs["hyphal.peer.identity"]["stringValue"].endswith("/ns/shop/sa/order")
    assert all(int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) for s in spans)
    # product was called by frontend within the same trace
    assert ("product-v1", 2) in kinds or ("product-v2", 2) in kinds


def test_stat_graph_and_tap(shop: Shop) -> None:
    state, run, _ = shop
    _synced(run)
    _drive(state, 30, [])
    deadline = time.monotonic() + 40  # the window forgets any failure from start-up
    while True:
        out = hyphal("stat", "deploy", "-n", "shop", "-o", "json", "--run-dir", str(run))
        assert out.returncode == 0, out.stderr
        rows = {r["name"]: r for r in json.loads(out.stdout)["items"]}
        want = ("frontend", "order", "payment")
        if all(w in rows and rows[w]["rps"] > 0 and rows[w]["success_rate"] == 1.0
               for w in want):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(1.0)
        _drive(state, 5, [])
    assert rows["payment"]["tls_percent"] == 100.0 and rows["payment"]["meshed"] == 1
    assert rows["frontend"]["latency_ms_p99"] is not None
    table = hyphal("stat", "--run-dir", str(run))
    assert table.returncode == 0 and "LATENCY_P99" in table.stdout and "frontend" in table.stdout
    graph = hyphal("graph", "-o", "json", "--run-dir", str(run))
    assert graph.returncode == 0, graph.stderr
    edges = {(e["from"], e["to_name"]): e for e in json.loads(graph.stdout)["edges"]}
    assert ("frontend", "product") in edges and ("order", "payment") in edges, edges
    assert edges[("frontend", "product")]["rps"] > 0
    dot = hyphal("graph", "--run-dir", str(run))
    assert '"shop/frontend" -> "product.shop.svc.cluster.local"' in dot.stdout
    tap = hyphal("tap", "payment", "--since", "5m", "--max", "3", "-o", "json",
                 "--run-dir", str(run))
    assert tap.returncode == 0, tap.stderr
    lines = [json.loads(x) for x in tap.stdout.splitlines()]
    assert len(lines) == 3 and all(x["path"] == "/process" and x["status"] == 200 for x in lines)


def test_check_flags_a_broken_subset(shop: Shop, tmp_path: Path) -> None:
    state, run, _ = shop
    _synced(run)
    clean = hyphal("check", "--run-dir", str(run))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "HYP0102" not in clean.stdout
    (tmp_path / "dr.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: order, namespace: shop}\n"
        "spec:\n  host: order\n  subsets:\n  - name: v9\n    labels: {version: v9}\n")
    applied = hyphal("apply", "-f", str(tmp_path / "dr.yaml"), "--api", state.api,
                     "--state-dir", state.state_dir)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    found = hyphal("check", "-o", "json", "--run-dir", str(run))
    findings = json.loads(found.stdout)["findings"]
    broken = [f for f in findings if f["code"] == "HYP0102"]
    assert broken and broken[0]["resource"] == "DestinationRule shop/order", findings
    assert "'v9'" in broken[0]["message"]
    # offline, the same file next to the shop's is flagged too
    offline_dir = tmp_path / "mesh"
    offline_dir.mkdir()
    for f in (SHOP / "mesh").glob("*.yaml"):
        (offline_dir / f.name).write_text(f.read_text())
    (offline_dir / "dr-order.yaml").write_text((tmp_path / "dr.yaml").read_text())
    offline = hyphal("check", str(offline_dir), "--failure-threshold", "warning")
    assert offline.returncode == 1 and "HYP0102" in offline.stdout, offline.stdout
