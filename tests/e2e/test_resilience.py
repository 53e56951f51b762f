"""Issue 5 end to end: resilience policies through real processes on 127.0.0.1.

`hyphal control` and six workloads, each a stdlib app with its own `hyphal proxy` (the
harness of test_sidecar_mesh, with a test app of our own): `web` (the caller; the tests
send proxy-form requests to its outbound listener), `api-a/b/c` (three replicas of Service
`api`; `api-c` answers `/slow` paths 80 ms late), `flaky` (always 503) and `mirror`
(answers everything 500 ms late). Every app counts the requests it received per path
prefix (`GET /__count` on its own port, outside the mesh), so the tests count upstream
attempts where they land.

Checked, in file order (the replica kill comes last: it changes the mesh):
- PEAK_EWMA (a DestinationRule subset) moves traffic off the slow replica;
- a 100% abort fault answers the configured status with `x-hyphal-reason: fault_injected`
  and never reaches an app;
- a mirrored route: every copy reaches the mirror (with `-shadow` Host) while the caller's
  p50 stays far below the mirror's 500 ms;
- a retry storm (5 retries on 5xx against an always-503 service) is capped by the retry
  budget (20% of requests + 3/s), counted at the app;
- one of three replicas killed under ~200 requests/s: >= 99.9% success with Istio's default
  retries and a default `outlierDetection: {}`, and the dead replica ejected within the
  detector's interval (the caller sidecar's `hyphal_outlier_ejections_total`).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from mesh_harness import (
    Mesh,
    ProxyFormClient,
    Workload,
    http_get,
    service_yaml,
    wait_until,
    workload_yaml,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NS = "demo"
API = "outbound|8080||api.demo.svc.cluster.local"
API_EWMA = "outbound|8080|ewma|api.demo.svc.cluster.local"
FLAKY = "outbound|8080||flaky.demo.svc.cluster.local"
MIRROR = "outbound|8080||mirror.demo.svc.cluster.local"

APP_SOURCE = '''\
"""Resilience test app: counts requests per first path segment; behaviour by version."""
import http.server, json, socket, sys, threading, time
from collections import Counter

NAME, VERSION, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
COUNTS = Counter()
HOSTS = Counter()
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/__count":
            with LOCK:
                self._send(200, json.dumps({"paths": COUNTS, "hosts": HOSTS}).encode())
            return
        segment = "/" + self.path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
        with LOCK:
            COUNTS[segment] += 1
            HOSTS[self.headers.get("Host", "")] += 1
        if VERSION == "slow" and segment == "/slow":
            time.sleep(0.08)
        if VERSION == "mirror":
            time.sleep(0.5)
        status = 503 if VERSION == "fail" and segment != "/" else 200
        self._send(status, json.dumps({"name": NAME, "path": self.path,
                                       "deadline": self.headers.get("x-hyphal-deadline"),
                                       "host": self.headers.get("Host", "")}).encode())

    do_GET = do_POST = _answer


http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer.request_queue_size = 128
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
'''


def service(name: str) -> str:
    return service_yaml(name)


def workload(name: str, app: str, version: str) -> str:
    return workload_yaml(name, app, version)


POLICIES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: demo}
spec:
  host: api
  trafficPolicy:
    outlierDetection: {}
  subsets:
    - name: ewma
      labels: {app: api}
      trafficPolicy:
        loadBalancer: {simple: PEAK_EWMA}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: demo}
spec:
  hosts: [api]
  http:
    - match: [{uri: {prefix: /slow}}]
      route: [{destination: {host: api, subset: ewma}}]
    - match: [{uri: {prefix: /fault}}]
      fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
      route: [{destination: {host: api}}]
    - match: [{uri: {prefix: /mirrored}}]
      route: [{destination: {host: api}}]
      mirror: {host: mirror}
      mirrorPercentage: {value: 100}
    - route: [{destination: {host: api}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: demo}
spec:
  hosts: [flaky]
  http:
    - route: [{destination: {host: flaky}}]
      retries: {attempts: 5, retryOn: 5xx}
"""

RESOURCES = "---\n".join(
    [
        service("web"),
        service("api"),
        service("flaky"),
        service("mirror"),
        workload("web", "web", "v1"),
        workload("api-a", "api", "v1"),
        workload("api-b", "api", "v1"),
        workload("api-c", "api", "slow"),
        workload("flaky", "flaky", "fail"),
        workload("mirror", "mirror", "mirror"),
        POLICIES,
    ]
)

REPLICAS = ("api-a", "api-b", "api-c")


def endpoints(w: Workload, cluster: str) -> int:
    status, body = w.admin("/config_dump")
    if status != 200:
        return 0
    spec = json.loads(body).get("config", {}).get("clusters", {}).get(cluster) or {}
    return len(spec.get("endpoints", []))


def counts(w: Workload) -> dict[str, dict[str, int]]:
    status, body = http_get(f"http://127.0.0.1:{w.app_port}/__count")
    assert status == 200, f"{w.name}'s app does not answer /__count"
    result: dict[str, dict[str, int]] = json.loads(body)
    return result


def metric(w: Workload, name: str, labels: str) -> int:
    _, body = w.admin("/stats/prometheus")
    prefix = f"{name}{{{labels}}} "
    for line in body.decode().splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix):]))
    return 0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = Mesh(tmp_path_factory.mktemp("resilience"))
    (m.root / "echo_app.py").write_text(APP_SOURCE)  # our app behind the harness's launcher
    try:
        m.start_control(RESOURCES)
        m.add_workload("web", NS, "web", {"app": "web", "version": "v1"})
        m.add_workload("api-a", NS, "api", {"app": "api", "version": "v1"})
        m.add_workload("api-b", NS, "api", {"app": "api", "version": "v1"})
        m.add_workload("api-c", NS, "api", {"app": "api", "version": "slow"})
        m.add_workload("flaky", NS, "flaky", {"app": "flaky", "version": "fail"})
        m.add_workload("mirror", NS, "mirror", {"app": "mirror", "version": "mirror"})
        m.wait_ready(40)
        web = m.workloads["web"]
        for cluster, n in ((API, 3), (API_EWMA, 3), (FLAKY, 1), (MIRROR, 1)):
            wait_until(f"web sees {n} endpoint(s) in {cluster}",
                       partial(lambda c, k: endpoints(web, c) == k, cluster, n), 20)
        yield m
    finally:
        m.stop()


def client(mesh: Mesh) -> ProxyFormClient:
    return ProxyFormClient(mesh.workloads["web"].outbound_port)


# ----------------------------------------------------------------------------- balancing


def test_peak_ewma_moves_traffic_off_the_slow_replica(mesh: Mesh) -> None:
    c = client(mesh)
    try:
        for i in range(150):
            status, body = c.get(f"http://api:8080/slow/{i}")
            assert status == 200, body
    finally:
        c.close()
    per = {name: counts(mesh.workloads[name])["paths"].get("/slow", 0) for name in REPLICAS}
    assert sum(per.values()) == 150, per
    # Round robin would give the slow replica 50; peak EWMA learns and avoids it.
    assert per["api-c"] <= 15, per
    assert per["api-a"] + per["api-b"] >= 135, per


# ----------------------------------------------------------------------------- faults


def test_abort_fault_answers_the_configured_status_on_the_callers_side(mesh: Mesh) -> None:
    port = mesh.workloads["web"].outbound_port
    for i in range(10):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", f"http://api:8080/fault/{i}")
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        assert resp.status == 418
        assert resp.getheader("x-hyphal-reason") == "fault_injected"
    for name in REPLICAS:
        assert counts(mesh.workloads[name])["paths"].get("/fault", 0) == 0, name


# ----------------------------------------------------------------------------- mirroring


def test_mirror_gets_a_copy_while_the_caller_latency_is_unchanged(mesh: Mesh) -> None:
    mirror = mesh.workloads["mirror"]
    c = client(mesh)
    latencies: list[float] = []
    try:
        for i in range(30):
            start = time.perf_counter()
            status, body = c.get(f"http://api:8080/mirrored/{i}")
            latencies.append(time.perf_counter() - start)
            assert status == 200, body
            assert json.loads(body)["name"] in REPLICAS
    finally:
        c.close()
    p50 = statistics.median(latencies)
    assert p50 < 0.15, f"caller p50 {p50 * 1000:.0f} ms: the 500 ms mirror leaked into it"
    wait_until("the mirror received every copy",
               lambda: counts(mirror)["paths"].get("/mirrored", 0) == 30, 10)
    hosts = counts(mirror)["hosts"]
    # Every copy says it is a shadow (the harness's own readiness GETs use the app's address).
    assert hosts.get("api-shadow:8080") == 30 and "api:8080" not in hosts, hosts
    assert sum(counts(mesh.workloads[n])["paths"].get("/mirrored", 0) for n in REPLICAS) == 30


# ----------------------------------------------------------------------------- retry budget


def test_retry_storm_is_capped_by_the_budget(mesh: Mesh) -> None:
    flaky = mesh.workloads["flaky"]
    web = mesh.workloads["web"]
    before = counts(flaky)["paths"].get("/storm", 0)
    sent = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + 3.0

    def worker() -> None:
        c = client(mesh)
        try:
            for i in range(400):  # bounded in count and in time
                if time.monotonic() > stop_at:
                    break
                status, _ = c.get(f"http://flaky:8080/storm/{i}")
                assert status == 503
                with lock:
                    sent[0] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    requests = sent[0]
    attempts = counts(flaky)["paths"].get("/storm", 0) - before
    assert requests >= 60, requests
    # Without a budget: 6 attempts per request. With it: 20% of requests + a 3/s reserve
    # over the 10 s window (30), plus one bucket of slack.
    assert requests < attempts <= requests * 1.2 + 35, (requests, attempts)
    exhausted = metric(web, "hyphal_upstream_rq_overflow_total",
                       f'cluster="{FLAKY}",reason="retry_budget_exhausted"')
    assert exhausted > 0


# ----------------------------------------------------------------------------- chaos


def test_one_of_three_replicas_killed_under_load(mesh: Mesh) -> None:
    web = mesh.workloads["web"]
    victim = mesh.workloads["api-b"]
    ejections_before = metric(web, "hyphal_outlier_ejections_total", f'name="{API}"')
    results: list[int] = []
    reasons: list[str] = []
    lock = threading.Lock()
    killed_at: list[float] = []
    ejected_at: list[float] = []
    stop_at = time.monotonic() + 5.0

    def worker() -> None:
        c = client(mesh)
        next_at = time.monotonic()
        try:
            for i in range(260):  # 4 workers x 50/s = ~200 requests/s, for at most 5 s
                now = time.monotonic()
                if now > stop_at:
                    break
                if next_at > now:
                    time.sleep(next_at - now)
                next_at += 0.02
                try:
                    status, body = c.get(f"http://api:8080/load/{i}")
                except (OSError, http.client.HTTPException) as exc:
                    status, body = 0, repr(exc).encode()
                with lock:
                    results.append(status)
                    if status != 200:
                        reasons.append(body.decode(errors="replace")[:80])
        finally:
            c.close()

    def watch_ejection() -> None:
        while time.monotonic() < stop_at + 5:
            if killed_at and metric(web, "hyphal_outlier_ejections_total",
                                    f'name="{API}"') > ejections_before:
                ejected_at.append(time.monotonic())
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    watcher = threading.Thread(target=watch_ejection)
    for t in threads:
        t.start()
    watcher.start()
    time.sleep(1.0)
    os.kill(victim.app_pid, signal.SIGKILL)  # the app dies; its sidecar stays in the registry
    killed_at.append(time.monotonic())
    for t in threads:
        t.join(30)
    watcher.join(30)
    total = len(results)
    ok = results.count(200)
    assert total >= 600, f"only {total} requests sent (load generator too slow)"
    assert ok / total >= 0.999, f"{total - ok} of {total} failed: {reasons[:5]}"
    assert ejected_at, "the dead replica was never ejected"
    interval = 10.0  # outlierDetection's default interval
    assert ejected_at[0] - killed_at[0] <= interval
    # After the ejection the dead replica takes no more first tries: its sidecar answers
    # nothing new (the app is gone) and the live ones carried the load.
    live = sum(counts(mesh.workloads[n])["paths"].get("/load", 0) for n in ("api-a", "api-c"))
    assert live >= ok * 0.6


def test_no_process_left(mesh: Mesh) -> None:
    pids = mesh.stop()
    for pid in pids:
        wait_until(f"pid {pid} gone", partial(_gone, pid), 10)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie of ours still answers kill(0); it is reaped by Popen.wait in stop().
    return Path(f"/proc/{pid}/status").exists() and "Z (zombie)" in Path(
        f"/proc/{pid}/status").read_text()
