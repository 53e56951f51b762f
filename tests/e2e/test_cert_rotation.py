"""Certificate and root rotation end to end, under load, with zero failed requests.

Real processes on 127.0.0.1 (tests/e2e/mesh_harness.py): `hyphal control --cert-ttl 6s`,
an echo app behind each of two sidecars, `web` calling Service `api` through its sidecar
over mTLS. A DestinationRule caps upstream connections at 20 requests, so new mTLS handshakes
keep happening while certificates and roots change. The tests share one mesh, in file order:

(a) workload certificates (6 s) rotate at half-life: every sidecar's serial changes at least
    twice while a steady, bounded load runs, and no request fails;
(b) `hyphal ca rotate` then `hyphal ca retire-root OLD` under the same load: no request
    fails, every sidecar ends on a certificate from the new root, and only it is trusted.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mesh_harness import (
    HYPHAL,
    REPO,
    Mesh,
    ProxyFormClient,
    Workload,
    service_yaml,
    wait_until,
    workload_yaml,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

URL = "http://api.demo.svc.cluster.local:8080/rot"

RESOURCES = "---\n".join(
    [service_yaml("web"), service_yaml("api"), workload_yaml("web", "web", "v1"),
     workload_yaml("api", "api", "v1")]
) + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: demo}
spec:
  host: api
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 20}
"""


class ShortCertMesh(Mesh):
    """The harness's mesh with a 6 s workload certificate lifetime on the control plane."""

    def _spawn(self, label: str, argv: list[str]) -> Any:
        if label == "control":
            argv = [*argv, "--cert-ttl", "6s"]
        return super()._spawn(label, argv)


@dataclass
class Load:
    """Steady proxy-form GETs from web's sidecar to api, bounded in count and time."""

    port: int
    max_requests: int = 20_000
    max_seconds: float = 60.0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = ProxyFormClient(self.port)
        deadline = time.monotonic() + self.max_seconds
        try:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    status, body = client.get(URL)
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"HTTP {status}: {body[:200]!r}")
                time.sleep(0.004)
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def certificate(w: Workload) -> dict[str, Any]:
    status, body = w.admin("/config_dump")
    assert status == 200, body
    cert: dict[str, Any] = json.loads(body)["certificate"]
    return cert


def hyphal(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYPHAL, *args], cwd=REPO, env=mesh.env(), capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = ShortCertMesh(Path(tmp_path_factory.mktemp("rotation")))
    try:
        m.start_control(RESOURCES)
        m.add_workload("web", "demo", "web", {"app": "web", "version": "v1"})
        m.add_workload("api", "demo", "api", {"app": "api", "version": "v1"})
        m.wait_ready()
        web = m.workloads["web"]
        wait_until(
            "web reaches api through the mesh",
            lambda: _get_ok(web.outbound_port),
            20,
        )
        yield m
    finally:
        m.stop()


def _get_ok(port: int) -> bool:
    client = ProxyFormClient(port)
    try:
        return client.get(URL)[0] == 200
    except OSError:
        return False
    finally:
        client.close()


def test_workload_certificates_rotate_at_half_life_under_load(mesh: Mesh) -> None:
    sidecars = list(mesh.workloads.values())
    serials: dict[str, set[str]] = {w.name: {certificate(w)["serial"]} for w in sidecars}
    start = {w.name: certificate(w)["rotations"] for w in sidecars}
    load = Load(mesh.workloads["web"].outbound_port, max_seconds=25)
    load.start()
    try:

        def rotated_twice() -> bool:
            done = True
            for w in sidecars:
                cert = certificate(w)  # one read: its serial and rotation count agree
                serials[w.name].add(cert["serial"])
                done = done and cert["rotations"] >= start[w.name] + 2
            return done

        wait_until("two certificate rotations on every sidecar", rotated_twice, 20)
        time.sleep(0.5)  # requests on the newest certificates too
    finally:
        load.stop()
    assert all(len(s) >= 3 for s in serials.values()), serials
    assert load.failures == [], load.failures[:5]
    assert load.ok > 200, load.ok


def test_root_rotation_under_load(mesh: Mesh) -> None:
    sidecars = list(mesh.workloads.values())
    before = json.loads(hyphal(mesh, "ca", "show", "-o", "json").stdout)
    old = before["signing_root"]
    assert [r["fingerprint"] for r in before["roots"]] == [old]
    assert {s["cert_root"] for s in before["sidecars"]} == {old}

    load = Load(mesh.workloads["web"].outbound_port, max_seconds=45)
    load.start()
    try:
        time.sleep(0.5)
        rotate = hyphal(mesh, "ca", "rotate", "--timeout", "30")
        assert rotate.returncode == 0, rotate.stdout + rotate.stderr + mesh.log("control")
        assert f"hyphal ca retire-root {old}" in rotate.stdout, rotate.stdout
        mid = json.loads(hyphal(mesh, "ca", "show", "-o", "json").stdout)
        new = mid["signing_root"]
        assert new != old and mid["rotation"]["phase"] == "switched"

        # The new root may not be retired (it signs), the old one only once unused: it is.
        refused = hyphal(mesh, "ca", "retire-root", new)
        assert refused.returncode == 1 and "signs workload certificates now" in refused.stderr
        retire = hyphal(mesh, "ca", "retire-root", old[:20])
        assert retire.returncode == 0, retire.stdout + retire.stderr
        time.sleep(1.5)  # traffic keeps flowing on the new root alone (and new handshakes)
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert load.ok > 100, load.ok

    after = json.loads(hyphal(mesh, "ca", "show", "-o", "json").stdout)
    assert [r["fingerprint"] for r in after["roots"]] == [new]
    assert after["serving_root"] == new and after["rotation"]["phase"] == "idle"
    for w in sidecars:
        wait_until(
            f"{w.name}'s trust bundle holds only the new root",
            lambda w=w: _roots(w) == 1,
            10,
        )
        assert certificate(w)["root_fingerprint"] == new, certificate(w)
    assert {s["cert_root"] for s in after["sidecars"]} == {new}


def _roots(w: Workload) -> int:
    status, body = w.admin("/config_dump")
    if status != 200:
        return -1
    return int(json.loads(body)["trust_bundle_roots"])
