"""The shop mesh end to end: real control plane, real sidecars, the example apps.

Comes up with `hyphal up`; the 95/5 canary holds; a live 50/50 apply is followed within a
second; payment's AuthorizationPolicy allows order and denies frontend; `hyphal down` leaves
no process behind.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from shop_helpers import SHOP, hyphal, mesh_up, needs_planes, status

from hyphal.demo import watch_line
from hyphal.local import procs
from hyphal.local.client import MeshClient, xfcc_uri
from hyphal.local.observe import find_replica
from hyphal.local.rundir import MeshState, RunDir

pytestmark = [pytest.mark.e2e, needs_planes, pytest.mark.timeout(240)]

TD = "spiffe://cluster.local/ns/shop/sa"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MeshState, Path]]:
    run = tmp_path_factory.mktemp("shop") / "run"
    with mesh_up(SHOP, run) as state:
        yield state, run


def client(state: MeshState, workload: str) -> MeshClient:
    return MeshClient(int(find_replica(state, workload, 0)["outbound_http_port"]))


def converge(c: MeshClient, url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while c.get(url).status != 200:
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.1)


def split(c: MeshClient, calls: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(calls):
        r = c.get("http://product:8080/product/1")
        seen[r.json()["version"] if r.status == 200 else str(r.status)] += 1
    return seen


def test_shop_comes_up(shop: tuple[MeshState, Path]) -> None:
    _, run = shop
    view = status(run)
    assert {r["workload"] for r in view["replicas"]} == {
        "frontend", "product-v1", "product-v2", "order", "payment"}
    for r in view["replicas"]:
        assert r["app"]["alive"] and r["sidecar"]["alive"] and r["ready"], r
        assert r["cert_expiry"], r  # from the sidecar's /config_dump
        assert {"listeners", "routes", "clusters", "endpoints"} <= set(r["config_versions"]), r
    deadline = time.monotonic() + 10
    while any(r["sync"] != "SYNCED" for r in view["replicas"]):  # the control plane's view
        assert time.monotonic() < deadline, [(r["workload"], r["sync"]) for r in view["replicas"]]
        time.sleep(0.2)
        view = status(run)
    identities = {r["workload"]: r["identity"] for r in view["replicas"]}
    assert identities["product-v2"] == f"{TD}/product"
    assert identities["order"] == f"{TD}/order"


def test_proxy_config_and_logs(shop: tuple[MeshState, Path]) -> None:
    _, run = shop
    routes = hyphal("proxy-config", "frontend", "routes", "--run-dir", str(run))
    assert routes.returncode == 0, routes.stderr
    assert ("outbound|8080|v1|product.shop.svc.cluster.local=95 "
            "outbound|8080|v2|product.shop.svc.cluster.local=5") in routes.stdout
    eps = hyphal("proxy-config", "frontend", "endpoints", "--run-dir", str(run))
    assert f"{TD}/payment" in eps.stdout and "version=v2" in eps.stdout
    logs = hyphal("logs", "frontend", "--run-dir", str(run))
    assert logs.returncode == 0 and "frontend listening on 127.0.0.1:" in logs.stdout


def test_canary_split_holds(shop: tuple[MeshState, Path]) -> None:
    state, _ = shop
    with client(state, "frontend") as c:
        converge(c, "http://product:8080/product/1")
        seen = split(c, 2000)
    assert set(seen) <= {"v1", "v2"}, seen
    assert 93.0 <= 100 * seen["v1"] / 2000 <= 97.0, seen


def test_every_hop_is_mtls_with_the_callers_identity(shop: tuple[MeshState, Path]) -> None:
    state, _ = shop
    with client(state, "frontend") as c:
        converge(c, "http://frontend:8080/")
        body = c.get("http://frontend:8080/").json()
    assert xfcc_uri(body["caller"]) == f"{TD}/frontend"
    assert xfcc_uri(body["product"]["body"]["caller"]) == f"{TD}/frontend"
    assert xfcc_uri(body["order"]["body"]["caller"]) == f"{TD}/frontend"
    assert xfcc_uri(body["order"]["body"]["payment"]["body"]["caller"]) == f"{TD}/order"


def test_order_may_pay(shop: tuple[MeshState, Path]) -> None:
    state, _ = shop
    with client(state, "order") as c:
        deadline = time.monotonic() + 15
        while (r := c.post("http://payment:8080/process", {"amount": 3})).status == 503:
            assert time.monotonic() < deadline, r  # config still converging
            time.sleep(0.1)
    assert r.status == 200, r
    assert r.json()["status"] == "paid"


def test_frontend_may_not_pay(shop: tuple[MeshState, Path]) -> None:
    state, _ = shop
    with client(state, "frontend") as c:
        deadline = time.monotonic() + 15
        while (r := c.post("http://payment:8080/process", {"amount": 3})).status == 503:
            assert time.monotonic() < deadline, r  # config still converging
            time.sleep(0.1)
    assert r.status == 403, r
    assert r.headers.get("x-hyphal-reason") == "rbac_denied"


def test_live_apply_of_50_50_is_followed_within_a_second(
        shop: tuple[MeshState, Path], tmp_path: Path) -> None:
    state, _ = shop
    vs = (SHOP / "mesh" / "traffic.yaml").read_text().replace("weight: 95", "weight: 50")
    vs = vs.replace("weight: 5\n", "weight: 50\n")
    (tmp_path / "vs.yaml").write_text(vs)
    with client(state, "frontend") as c:
        converge(c, "http://product:8080/product/1")
        applied = hyphal("apply", "-f", str(tmp_path / "vs.yaml"), "--api", state.api,
                         "--state-dir", state.state_dir)
        t0 = time.monotonic()
        assert applied.returncode == 0, applied.stdout + applied.stderr
        while True:  # a batch of 40 with >= 12 v2 is essentially impossible at 95/5
            batch = split(c, 40)
            if batch["v2"] >= 12:
                break
            assert time.monotonic() - t0 < 5, "the 50/50 split never showed"
        followed = time.monotonic() - t0
        seen = split(c, 600)
    assert followed < 1.0, f"followed after {followed:.2f}s"
    assert 40.0 <= 100 * seen["v2"] / 600 <= 60.0, seen


def test_deny_all_from_examples_try_is_seen_by_the_demo_line(
        shop: tuple[MeshState, Path]) -> None:
    """What `make demo` prints every 5 s follows examples/try/payment-deny-all.yaml, and the
    shop's own security.yaml restores order's right to pay."""
    state, _ = shop

    def apply(path: Path) -> None:
        done = hyphal("apply", "-f", str(path), "--api", state.api, "--state-dir", state.state_dir)
        assert done.returncode == 0, done.stdout + done.stderr

    def until(verdict: str) -> str:
        deadline = time.monotonic() + 10
        while True:
            line = watch_line(front, order, 10)
            if line.endswith(f"order -> payment POST /process: {verdict}"):
                return line
            assert time.monotonic() < deadline, line
            time.sleep(0.1)

    with client(state, "frontend") as front, client(state, "order") as order:
        until("200")
        apply(SHOP.parent / "try" / "payment-deny-all.yaml")
        assert "product split over the last 10 calls: v" in until("403 rbac_denied")
        apply(SHOP / "mesh" / "security.yaml")
        until("200")


def test_down_stops_every_process(shop: tuple[MeshState, Path]) -> None:
    _, run = shop
    state = RunDir(run).require_state()
    pids = [(p.pid, p.start_ticks) for p in state.processes if p.pid]
    assert len(pids) == 11  # control + 5 x (sidecar, app)
    down = hyphal("down", "--run-dir", str(run))
    assert down.returncode == 0, down.stderr
    assert "stopped supervisor" in down.stdout
    assert all(not procs.group_alive(p, s) for p, s in pids)
    assert state.supervisor_pid is not None
    assert not procs.is_alive(state.supervisor_pid, state.supervisor_start_ticks)
