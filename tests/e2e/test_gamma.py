"""e2e GAMMA: an HTTPRoute attached to Service `api` steers real traffic between two Services.

Real processes on loopback (`hyphal control`, echo apps, `hyphal proxy` sidecars, from
tests/e2e/mesh_harness.py): `api` selects every api workload, `api-v1` and `api-v2` select one
version each (overlapping selectors). An HTTPRoute with parentRef `api` sends a call carrying
`x-canary: yes` to api-v2 and splits the rest 90/10 by weight. The test checks the split over
1,000 calls, the header route, that a `hyphal apply` of a changed route is followed, and that
no process is left.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from mesh_harness import HYPHAL, Mesh, pid_alive, service_yaml, wait_until, workload_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

NS = "demo"


def service(name: str, selector: str) -> str:
    return service_yaml(name, selector=selector, protocol=None)


def workload(name: str, app: str, version: str) -> str:
    return workload_yaml(name, app, version, protocol=None)


def http_route(v1: int, v2: int) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: demo}}
spec:
  parentRefs: [{{group: "", kind: Service, name: api, port: 8080}}]
  rules:
  - backendRefs:
    - {{name: api-v1, port: 8080, weight: {v1}}}
    - {{name: api-v2, port: 8080, weight: {v2}}}
  - matches: [{{headers: [{{name: x-canary, value: "yes"}}]}}]
    backendRefs: [{{name: api-v2, port: 8080}}]
"""


RESOURCES = "---\n".join(
    [
        service("web", "{app: web}"),
        service("api", "{app: api}"),
        service("api-v1", "{app: api, version: v1}"),
        service("api-v2", "{app: api, version: v2}"),
        workload("web", "web", "v1"),
        workload("api-v1", "api", "v1"),
        workload("api-v2", "api", "v2"),
        http_route(90, 10),
    ]
)


def endpoints(mesh: Mesh, cluster: str) -> int:
    status, body = mesh.workloads["web"].admin("/config_dump")
    if status != 200:
        return 0
    spec = json.loads(body).get("config", {}).get("clusters", {}).get(cluster) or {}
    return len(spec.get("endpoints", []))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = Mesh(tmp_path_factory.mktemp("gamma"))
    try:
        m.start_control(RESOURCES)
        m.add_workload("web", NS, "web", {"app": "web", "version": "v1"})
        m.add_workload("api-v1", NS, "api", {"app": "api", "version": "v1"})
        m.add_workload("api-v2", NS, "api", {"app": "api", "version": "v2"})
        m.wait_ready()
        for name in ("api-v1", "api-v2"):
            cluster = f"outbound|8080||{name}.{NS}.svc.cluster.local"
            wait_until(
                f"an endpoint in {cluster}", partial(lambda c: endpoints(m, c) == 1, cluster), 15
            )
        yield m
    finally:
        m.stop()


def calls(
    mesh: Mesh, n: int, headers: dict[str, str] | None = None, threads: int = 4
) -> Counter[str]:
    """`n` GETs to http://api:8080 through web's sidecar (proxy-form, keep-alive), bounded to
    30 s; the version that answered each, or what went wrong."""
    port = mesh.workloads["web"].outbound_port
    deadline = time.monotonic() + 30
    results: list[Counter[str]] = [Counter() for _ in range(threads)]

    def worker(out: Counter[str], count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            for _ in range(count):
                if time.monotonic() > deadline:
                    return
                try:
                    conn.request("GET", "http://api:8080/gamma", headers=headers or {})
                    resp = conn.getresponse()
                    body = resp.read()
                    out[
                        json.loads(body)["version"] if resp.status == 200 else f"HTTP {resp.status}"
                    ] += 1
                    if resp.will_close:
                        conn.close()
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    out[type(exc).__name__] += 1
                    conn.close()
        finally:
            conn.close()

    share = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    workers = [
        threading.Thread(target=worker, args=(results[i], share[i]), daemon=True)
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(40)
    assert not any(w.is_alive() for w in workers), "a client thread did not finish"
    return sum(results, Counter())


def test_weights_split_90_10_over_1000_calls(mesh: Mesh) -> None:
    seen = calls(mesh, 1000)
    assert sum(seen.values()) == 1000, f"1,000 calls did not finish within 30s: {seen}"
    assert set(seen) <= {"v1", "v2"}, seen
    # 10% of 1,000: standard deviation ~9.5 calls, so 65..135 is a >3.5 sigma band.
    assert 65 <= seen["v2"] <= 135, seen


def test_header_match_routes_to_v2(mesh: Mesh) -> None:
    seen = calls(mesh, 100, headers={"x-canary": "yes"}, threads=2)
    assert seen == Counter({"v2": 100}), seen
    other = calls(mesh, 100, headers={"x-canary": "no"}, threads=2)
    assert set(other) <= {"v1", "v2"} and other["v1"] > 60, other


def test_apply_of_a_changed_route_is_followed(mesh: Mesh, tmp_path: Path) -> None:
    (tmp_path / "route.yaml").write_text(http_route(0, 1))
    out = subprocess.run(
        [*HYPHAL, "apply", "-f", str(tmp_path / "route.yaml")],
        capture_output=True,
        text=True,
        env=mesh.env(),
        timeout=20,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "httproute.gateway.networking.k8s.io/api configured" in out.stdout, out.stdout
    wait_until(
        "every call goes to v2", lambda: calls(mesh, 20, threads=1) == Counter({"v2": 20}), 10
    )
    seen = calls(mesh, 200)
    assert seen == Counter({"v2": 200}), seen


def test_every_process_is_gone_after_stop(mesh: Mesh) -> None:
    pids = mesh.stop()
    assert len(pids) == 7  # control + 3 apps + 3 sidecars
    assert not [p for p in pids if pid_alive(p)]
