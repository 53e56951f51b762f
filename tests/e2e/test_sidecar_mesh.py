"""The sidecar end to end: a hand-built mesh of real processes on 127.0.0.1.

`hyphal control` (ports from the kernel), and three workloads in namespace `demo`, each a
stdlib echo app with its own `hyphal proxy` started from a bootstrap file written per
docs/xds-conventions.md: `web` (the caller) and `api-v1`/`api-v2` (Service `api`, subsets
v1/v2, a 95/5 VirtualService). Checked from the outside with real clients (curl, httpx, ssl):
mTLS with the caller's identity in XFCC; the inbound side refuses plaintext, foreign-CA and
certificate-less clients; the 95/5 split; a live `hyphal apply` to 50/50 under load with no
failed request; the proxy's own answers say why; Prometheus counts and access-log identity;
and no process is left behind.

The tests share one mesh and run in file order (the live change comes after the 95/5 check,
the process check last).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mesh_harness import (
    HYPHAL,
    Mesh,
    ProxyFormClient,
    Workload,
    pid_alive,
    service_yaml,
    wait_until,
    workload_yaml,
)

from hyphal.identity.client import request_certificate
from hyphal.identity.keys import generate_key
from hyphal.identity.spiffe import SpiffeId
from hyphal.local.client import xfcc_uri

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

NS = "demo"
WEB_ID = "spiffe://cluster.local/ns/demo/sa/web"
API_ID = "spiffe://cluster.local/ns/demo/sa/api"
API_FQDN = "api.demo.svc.cluster.local"

SERVICES = service_yaml("web") + "---\n" + service_yaml("api")


DESTINATION_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: demo}
spec:
  host: api
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"""


def virtual_service(v1: int, v2: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: demo}}
spec:
  hosts: [api]
  http:
    - route:
        - destination: {{host: api, subset: v1}}
          weight: {v1}
        - destination: {{host: api, subset: v2}}
          weight: {v2}
"""


RESOURCES = "---\n".join(
    [
        SERVICES,
        workload_yaml("web", "web", "v1"),
        workload_yaml("api-v1", "api", "v1"),
        workload_yaml("api-v2", "api", "v2"),
        DESTINATION_RULE,
        virtual_service(95, 5),
    ]
)


def cluster_endpoints(w: Workload, cluster: str) -> list[dict[str, object]]:
    """The endpoints `w`'s sidecar has compiled for `cluster` (from /config_dump)."""
    status, body = w.admin("/config_dump")
    if status != 200:
        return []
    spec = json.loads(body).get("config", {}).get("clusters", {}).get(cluster) or {}
    eps: list[dict[str, object]] = spec.get("endpoints", [])
    return eps


def has_endpoints(w: Workload, cluster: str, count: int) -> bool:
    return len(cluster_endpoints(w, cluster)) == count


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = Mesh(tmp_path_factory.mktemp("sidecar-mesh"))
    try:
        m.start_control(RESOURCES)
        m.add_workload("web", NS, "web", {"app": "web", "version": "v1"})
        m.add_workload("api-v1", NS, "api", {"app": "api", "version": "v1"})
        m.add_workload("api-v2", NS, "api", {"app": "api", "version": "v2"})
        m.wait_ready()
        web = m.workloads["web"]
        for subset in ("v1", "v2"):
            name = f"outbound|8080|{subset}|{API_FQDN}"
            wait_until(
                f"web's sidecar has an endpoint in {name}", partial(has_endpoints, web, name, 1), 15
            )
        yield m
    finally:
        m.stop()


def curl(mesh: Mesh, url: str, *extra: str) -> tuple[int, dict[str, str], str]:
    """The real curl, proxy-form through web's outbound listener: (status, headers, body)."""
    port = mesh.workloads["web"].outbound_port
    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "5", "-x", f"http://127.0.0.1:{port}", *extra, url],
        capture_output=True,
        text=True,
        env=mesh.env(),
        timeout=10,
        check=False,
    )
    assert out.returncode == 0, f"curl {url} failed: {out.stderr}"
    head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def proxy_client(mesh: Mesh) -> httpx.Client:
    """A keep-alive httpx client that sends every request through web's sidecar."""
    port = mesh.workloads["web"].outbound_port
    return httpx.Client(proxy=f"http://127.0.0.1:{port}", timeout=5.0, trust_env=False)


# --------------------------------------------------------------------------- 1. mTLS + XFCC


def test_curl_reaches_api_over_mtls_with_the_callers_identity(mesh: Mesh) -> None:
    for url in ("http://api.demo:8080/hello", "http://api:8080/hello"):
        status, headers, body = curl(mesh, url)
        assert status == 200, (url, status, headers, body)
        seen = json.loads(body)
        assert seen["name"] in {"api-v1", "api-v2"}, seen
        assert seen["path"] == "/hello"
        # The api app learns who called from the XFCC its sidecar set after the mTLS handshake.
        assert xfcc_uri(seen["xfcc"]) == WEB_ID, seen
        assert f"By={API_ID}" in seen["xfcc"], seen

    # An identity the caller writes itself never reaches the app: the sidecar sets XFCC anew.
    forged = "x-forwarded-client-cert: By=x;URI=spiffe://cluster.local/ns/demo/sa/admin"
    status, _, body = curl(mesh, "http://api:8080/forged", "-H", forged)
    assert status == 200 and xfcc_uri(json.loads(body)["xfcc"]) == WEB_ID, body


# --------------------------------------------------------------------------- 2. inbound refusals


def foreign_identity(tmp: Path) -> tuple[Path, Path]:
    """A CA the mesh has never heard of, and a leaf claiming web's SPIFFE id, as PEM files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "not the mesh")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB_ID)]), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = tmp / "foreign-chain.pem"
    chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_file = tmp / "foreign-key.pem"
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, key_file


def client_context(
    chain: Path | None = None, key: Path | None = None, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    # The server's certificate is not what is under test here: only whether it lets us in.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        ctx.maximum_version = max_version
    if chain is not None:
        ctx.load_cert_chain(chain, key)
    return ctx


REQUEST = b"GET /hello HTTP/1.1\r\nHost: api.demo:8080\r\nConnection: close\r\n\r\n"


def tls_exchange(port: int, ctx: ssl.SSLContext) -> tuple[str, bytes]:
    """("handshake", b"") when the handshake fails; ("refused", partial) when the server
    ends the connection with an alert or EOF before answering; ("answered", response)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        try:
            conn = ctx.wrap_socket(raw)
        except (ssl.SSLError, ConnectionError):
            return "handshake", b""
        data = b""
        try:
            conn.sendall(REQUEST)
            while chunk := conn.recv(65536):
                data += chunk
        except (ssl.SSLError, ConnectionError):
            return ("answered", data) if data.startswith(b"HTTP/") else ("refused", data)
        finally:
            conn.close()
        return ("answered", data) if data.startswith(b"HTTP/") else ("refused", data)
    finally:
        raw.close()


def test_inbound_refuses_plaintext_foreign_ca_and_certificateless_clients(
    mesh: Mesh, tmp_path: Path
) -> None:
    api = mesh.workloads["api-v1"]
    port = api.inbound_port

    # Plaintext HTTP: no app response, the connection is closed (a TLS alert at most).
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(REQUEST)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionError:
            pass
    assert b"HTTP/" not in got and b"api-v1" not in got, got

    # A certificate from another CA claiming web's identity: refused in the handshake (TLS 1.2
    # decides there; with TLS 1.3 the client learns it from the server's alert right after).
    chain, key = foreign_identity(tmp_path)
    assert tls_exchange(port, client_context(chain, key, ssl.TLSVersion.TLSv1_2))[0] == "handshake"
    outcome, data = tls_exchange(port, client_context(chain, key))
    assert outcome in ("handshake", "refused") and not data, (outcome, data)

    # No client certificate at all: refused as well.
    assert tls_exchange(port, client_context(max_version=ssl.TLSVersion.TLSv1_2))[0] == "handshake"
    outcome, data = tls_exchange(port, client_context())
    assert outcome in ("handshake", "refused") and not data, (outcome, data)

    # Control: the same client code with a certificate from the mesh CA gets the app's answer,
    # so the refusals above are about the credential, not about the client.
    bundle = asyncio.run(
        request_certificate(
            f"127.0.0.1:{mesh.ports['ca']}",
            (mesh.state_dir / "ca" / "root-cert.pem").read_bytes(),
            mesh.token(NS, "web"),
            generate_key(),
            SpiffeId("cluster.local", NS, "web"),
        )
    )
    (tmp_path / "mesh-chain.pem").write_bytes(bundle.chain_pem)
    (tmp_path / "mesh-key.pem").write_bytes(bundle.key_pem)
    outcome, data = tls_exchange(
        port, client_context(tmp_path / "mesh-chain.pem", tmp_path / "mesh-key.pem")
    )
    assert outcome == "answered" and data.startswith(b"HTTP/1.1 200"), (outcome, data)
    assert f"URI={WEB_ID}".encode() in data and b"api-v1" in data, data

    # Nothing of the refused attempts reached the app: its sidecar logged only the control.
    wait_until(
        "api-v1's access log has the control request",
        lambda: any(e["path"] == "/hello" for e in api.access_log_lines()),
        5,
    )
    inbound = [e for e in api.access_log_lines() if e["listener"].startswith("inbound")]
    assert all(e["downstream_identity"] == WEB_ID for e in inbound), inbound


# --------------------------------------------------------------------------- 3. 95/5 split


Outcome = tuple[float, str]  # (monotonic time the request started, "v1" | "v2" | what failed)


def load(
    mesh: Mesh,
    path: str,
    threads: int,
    per_thread: int,
    seconds: float,
    stop: threading.Event | None = None,
) -> list[Outcome]:
    """`threads` keep-alive clients through web's sidecar, each doing up to `per_thread`
    requests to api until `stop` is set or `seconds` have passed; every outcome, in order."""
    port = mesh.workloads["web"].outbound_port
    deadline = time.monotonic() + seconds
    results: list[list[Outcome]] = [[] for _ in range(threads)]

    def worker(out: list[Outcome]) -> None:
        client = ProxyFormClient(port)
        try:
            for _ in range(per_thread):
                if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                    return
                started = time.monotonic()
                try:
                    status, body = client.get(f"http://api:8080{path}")
                    outcome = json.loads(body)["version"] if status == 200 else f"HTTP {status}"
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                out.append((started, outcome))
        finally:
            client.close()

    workers = [threading.Thread(target=worker, args=(r,), daemon=True) for r in results]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 10)
    assert not any(w.is_alive() for w in workers), "a load thread did not finish"
    return sorted(o for r in results for o in r)


def test_95_5_split_over_two_versions(mesh: Mesh) -> None:
    outcomes = load(mesh, "/split", threads=4, per_thread=500, seconds=40)
    seen = Counter(o for _, o in outcomes)
    assert sum(seen.values()) == 2000, f"2,000 requests did not finish within 40s: {seen}"
    assert set(seen) <= {"v1", "v2"}, seen
    assert 93.0 <= seen["v1"] / 20 <= 97.0, seen
    assert 3.0 <= seen["v2"] / 20 <= 7.0, seen


# --------------------------------------------------------------------------- 4. live apply


def test_live_apply_to_50_50_is_followed_within_a_second_with_no_failed_request(
    mesh: Mesh, tmp_path: Path
) -> None:
    stop = threading.Event()
    outcomes: list[Outcome] = []
    running = threading.Thread(
        target=lambda: outcomes.extend(
            load(mesh, "/live", threads=3, per_thread=4000, seconds=20, stop=stop)
        ),
        daemon=True,
    )
    running.start()
    try:
        time.sleep(1.0)
        (tmp_path / "vs.yaml").write_text(virtual_service(50, 50))
        out = subprocess.run(
            [*HYPHAL, "apply", "-f", str(tmp_path / "vs.yaml")],
            capture_output=True,
            text=True,
            env=mesh.env(),
            timeout=20,
            check=False,
        )
        applied = time.monotonic()
        assert out.returncode == 0, out.stderr
        assert "virtualservice.networking.istio.io/api configured" in out.stdout, out.stdout
        time.sleep(2.0)
    finally:
        stop.set()
        running.join(30)
    assert not running.is_alive()

    failed = [(t, o) for t, o in outcomes if o not in ("v1", "v2")]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    before = Counter(o for t, o in outcomes if t < applied - 0.6)  # the CLI takes a moment
    after = Counter(o for t, o in outcomes if t > applied + 1.0)
    assert sum(before.values()) >= 50 and before["v2"] / sum(before.values()) < 0.15, before
    assert sum(after.values()) >= 150, after
    assert 0.40 <= after["v2"] / sum(after.values()) <= 0.60, after


# --------------------------------------------------------------------------- 5. reasons, stats, log


def istio_requests(w: Workload, **match: str) -> int:
    """Sum of istio_requests_total samples on `w`'s sidecar whose labels include `match`."""
    status, body = w.admin("/stats/prometheus")
    assert status == 200, body
    total = 0
    for line in body.decode().splitlines():
        if not line.startswith("istio_requests_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line[: line.rindex("}")]))
        if all(labels.get(k) == v for k, v in match.items()):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_proxy_answers_say_why_and_calls_are_counted_and_logged(mesh: Mesh) -> None:
    web = mesh.workloads["web"]
    apis = [mesh.workloads["api-v1"], mesh.workloads["api-v2"]]

    status, headers, _ = curl(mesh, "http://nowhere.demo:8080/x")
    assert status == 404 and headers.get("x-hyphal-reason") == "no_route", (status, headers)

    source = {
        "reporter": "source",
        "source_principal": WEB_ID,
        "destination_service": API_FQDN,
        "destination_principal": API_ID,
        "response_code": "200",
    }
    dest = {
        "reporter": "destination",
        "source_principal": WEB_ID,
        "destination_service": API_FQDN,
        "connection_security_policy": "mutual_tls",
        "response_code": "200",
    }
    src_before = istio_requests(web, **source)
    dst_before = sum(istio_requests(a, **dest) for a in apis)

    marker = f"/counted-{uuid.uuid4().hex}"
    calls = 7
    with proxy_client(mesh) as client:
        for _ in range(calls):
            assert client.get(f"http://api:8080{marker}").status_code == 200

    assert istio_requests(web, **source) - src_before == calls
    assert sum(istio_requests(a, **dest) for a in apis) - dst_before == calls

    # The access log (flushed within about a second) names the peer of each call: on the api
    # side the caller's SPIFFE id; on web's side the route and cluster it took.
    def lines(ws: list[Workload]) -> list[dict[str, object]]:
        return [e for w in ws for e in w.access_log_lines() if e["path"] == marker]

    wait_until(
        "the api sidecars' access logs have every call", lambda: len(lines(apis)) == calls, 5
    )
    for entry in lines(apis):
        assert entry["downstream_identity"] == WEB_ID, entry
        assert entry["status"] == 200 and str(entry["listener"]).startswith("inbound"), entry
    wait_until("web's access log has every call", lambda: len(lines([web])) == calls, 5)
    for entry in lines([web]):
        assert entry["status"] == 200 and str(entry["cluster"]).endswith(API_FQDN), entry
    wait_until(
        "web's access log has the no_route answer",
        lambda: any(
            e["path"] == "/x" and e["reason"] == "no_route" for e in web.access_log_lines()
        ),
        5,
    )


# --------------------------------------------------------------------------- 6. memory


def test_running_sidecars_hold_no_cryptography_or_pydantic(mesh: Mesh) -> None:
    """Certificates are made in a short-lived child (hyphal.proxy.cert_worker) and the
    bootstrap is checked by hand: neither library is mapped into a serving sidecar (RSS)."""
    for w in mesh.workloads.values():
        maps = Path(f"/proc/{w.sidecar_pid}/maps").read_text()
        assert "cryptography" not in maps and "pydantic_core" not in maps, w.name


# --------------------------------------------------------------------------- 7. teardown


def test_every_process_is_gone_after_stop(mesh: Mesh) -> None:
    pids = mesh.pids()
    assert len(pids) == 7  # control plane, 3 apps, 3 sidecars
    assert all(pid_alive(p) for p in pids)
    mesh.stop()
    assert [p for p in pids if pid_alive(p)] == []
    # The hyphal processes stop on SIGTERM by themselves (drain, then exit 0), not by SIGKILL.
    codes = {label: proc.returncode for label, proc in mesh.procs}
    assert {k: v for k, v in codes.items() if not k.endswith("-app")} == {
        "control": 0,
        "web-sidecar": 0,
        "api-v1-sidecar": 0,
        "api-v2-sidecar": 0,
    }, codes
