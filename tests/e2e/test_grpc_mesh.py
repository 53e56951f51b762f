"""gRPC end to end through two sidecars over mTLS: real processes on 127.0.0.1.

`hyphal control`, a grpcio server app in two versions (`greeter-v1`, `greeter-v2`, Service
`greeter` with a GRPC port, generic handlers: no proto compile), each with its own `hyphal
proxy`, and a caller workload `client` whose app is this test process: a grpcio channel to
`greeter.demo:50051` through the client's sidecar the way an app with `http_proxy` reaches it
(grpcio sends CONNECT to the proxy, then h2c inside), or through its per-upstream port (h2c
prior knowledge). Checked: unary and server-streaming calls; the server sees the caller's
SPIFFE id in XFCC metadata; an 80/20 weighted route on one gRPC method (`:path` match) over
500 calls; an AuthorizationPolicy denying a method gives PERMISSION_DENIED with the reason;
a killed server version's traffic is retried to the other without a client error (the
retry budget of 20% + 3/s is covered because outlier detection ejects the dead version after
two UNAVAILABLE replies). With 100% trace sampling to an OTLP file, a gRPC call leaves a
client span and a server span linked as parent and child; gRPC errors are counted as
response_code 200 with Istio's grpc_response_status. A Service `web` whose port is declared
HTTP2 is served by an h2c app (tests/proxy/h2/h2c_app.py): plain HTTP/1.1 requests (httpx
through the client's sidecar as HTTP proxy) are carried over HTTP/2 and answered back in
HTTP/1.1.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from mesh_harness import HYPHAL, Mesh, free_ports, http_get, pid_alive, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NS = "demo"
FQDN = "greeter.demo.svc.cluster.local"
CLIENT_ID = "spiffe://cluster.local/ns/demo/sa/client"
SERVICE = "hyphal.test.Greeter"
WEB_FQDN = "web.demo.svc.cluster.local"
H2C_APP = Path(__file__).resolve().parents[1] / "proxy" / "h2" / "h2c_app.py"

SERVER_APP = '''\
"""e2e gRPC app: generic handlers, answers JSON {name, version, xfcc, method}."""
import json, sys
from concurrent import futures
import grpc

NAME, VERSION, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])


def answer(method):
    def handler(request, context):
        md = dict(context.invocation_metadata())
        return json.dumps({"name": NAME, "version": VERSION, "method": method,
                           "xfcc": md.get("x-forwarded-client-cert", ""),
                           "size": len(request)}).encode()
    return grpc.unary_unary_rpc_method_handler(handler)


def stream(request, context):
    for i in range(int(request or b"3")):
        yield json.dumps({"name": NAME, "i": i}).encode()


handlers = {m: answer(m) for m in ("Hello", "Split", "Secret")}
handlers["Count"] = grpc.unary_stream_rpc_method_handler(stream)
server = grpc.server(futures.ThreadPoolExecutor(16))
server.add_generic_rpc_handlers(
    (grpc.method_handlers_generic_handler("hyphal.test.Greeter", handlers),))
server.add_insecure_port(f"127.0.0.1:{PORT}")
server.start()
server.wait_for_termination()
'''

RESOURCES = f"""\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {{name: greeter, namespace: demo}}
spec:
  selector: {{app: greeter}}
  ports: [{{name: grpc, port: 50051, protocol: GRPC}}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {{name: web, namespace: demo}}
spec:
  selector: {{app: web}}
  ports: [{{name: http2, port: 8080, protocol: HTTP2}}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {{name: client, namespace: demo}}
spec:
  selector: {{app: client}}
  ports: [{{name: http, port: 8080, protocol: HTTP}}]
---
# A sidecar becomes a Service's endpoint only with the service account of a Workload the
# Service selects (docs/security.md), so each workload is declared.
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {{name: greeter-v1, namespace: demo}}
spec:
  labels: {{app: greeter, version: v1}}
  serviceAccount: greeter
  ports: [{{name: grpc, port: 50051, protocol: GRPC}}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {{name: greeter-v2, namespace: demo}}
spec:
  labels: {{app: greeter, version: v2}}
  serviceAccount: greeter
  ports: [{{name: grpc, port: 50051, protocol: GRPC}}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {{name: web, namespace: demo}}
spec:
  labels: {{app: web, version: v1}}
  serviceAccount: web
  ports: [{{name: http2, port: 8080, protocol: HTTP2}}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {{name: client, namespace: demo}}
spec:
  labels: {{app: client, version: v1}}
  serviceAccount: client
  ports: [{{name: http, port: 8080, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: greeter, namespace: demo}}
spec:
  host: greeter
  trafficPolicy:
    # gRPC errors ride on HTTP 200; the sidecar counts UNAVAILABLE as a 503 for ejection.
    outlierDetection: {{consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s,
                        maxEjectionPercent: 50}}
  subsets:
    - {{name: v1, labels: {{version: v1}}}}
    - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter, namespace: demo}}
spec:
  hosts: [greeter]
  http:
    - match: [{{uri: {{exact: /{SERVICE}/Split}}}}]
      route:
        - {{destination: {{host: greeter, subset: v1}}, weight: 80}}
        - {{destination: {{host: greeter, subset: v2}}, weight: 20}}
    - route:
        - destination: {{host: greeter}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-secrets, namespace: demo}}
spec:
  selector: {{matchLabels: {{app: greeter}}}}
  action: DENY
  rules:
    - to: [{{operation: {{methods: [POST], paths: [/{SERVICE}/Secret]}}}}]
"""


class GrpcMesh(Mesh):
    """mesh_harness's Mesh plus workloads with a GRPC port and a grpcio server app."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        (root / "grpc_app.py").write_text(SERVER_APP)
        self.sidecars: dict[str, dict[str, int]] = {}

    def add_grpc_workload(self, name: str, labels: dict[str, str], sa: str, server: bool,
                          ports: list[int], h2c: bool = False) -> None:
        """`ports`: five free ports (asked for together, so no two workloads share one);
        `h2c`: the app is the h2c app on an HTTP2 port instead of the gRPC server."""
        app_port, inbound, outbound, admin, upstream = ports
        token_file = self.root / f"{name}.token"
        token_file.write_text(self.token(NS, sa) + "\n")
        port = ({"name": "http2", "port": 8080, "protocol": "HTTP2"} if h2c
                else {"name": "grpc", "port": 50051, "protocol": "GRPC"} if server
                else {"name": "http", "port": 8080, "protocol": "HTTP"})
        bootstrap = {
            "node": {"id": f"{name}-0.{NS}", "cluster": name, "metadata": {
                "NAMESPACE": NS, "SERVICE_ACCOUNT": sa, "WORKLOAD_NAME": name,
                "LABELS": labels, "INSTANCE_IP": "127.0.0.1", "PROXY_MODE": "sidecar",
                "OUTBOUND_HTTP_PORT": outbound,
                "PORTS": [{**port, "app_port": app_port, "inbound_port": inbound}],
                "UPSTREAM_PORTS": {} if server else {f"{FQDN}:50051": upstream}}},
            "xds_address": f"127.0.0.1:{self.ports['xds']}",
            "ca_address": f"127.0.0.1:{self.ports['ca']}",
            "root_cert_file": str(self.state_dir / "ca" / "root-cert.pem"),
            "token_file": str(token_file), "trust_domain": "cluster.local",
            "admin_port": admin, "access_log": str(self.root / f"{name}.access.log"),
            "cert_ttl_seconds": 3600,
            "tracing": {"sampling": 1.0, "otlp_file": str(self.root / "spans.jsonl")},
        }
        path = self.root / f"{name}.bootstrap.json"
        path.write_text(json.dumps(bootstrap))
        if h2c:
            self._spawn(f"{name}-app", [sys.executable, str(H2C_APP), name, str(app_port)])
        elif server:
            self._spawn(f"{name}-app", [sys.executable, str(self.root / "grpc_app.py"), name,
                                        labels["version"], str(app_port)])
        self._spawn(f"{name}-sidecar", [*HYPHAL, "proxy", "--bootstrap", str(path)])
        self.sidecars[name] = {"app": app_port, "outbound": outbound, "admin": admin,
                               "upstream": upstream}

    def app_pid(self, name: str) -> int:
        return next(p.pid for label, p in self.procs if label == f"{name}-app")

    def endpoints(self, name: str, cluster: str) -> int:
        status, body = http_get(f"http://127.0.0.1:{self.sidecars[name]['admin']}/config_dump")
        if status != 200:
            return 0
        spec = json.loads(body).get("config", {}).get("clusters", {}).get(cluster) or {}
        return len(spec.get("endpoints", []))

    def metric(self, name: str, needle: str) -> float:
        _, body = http_get(f"http://127.0.0.1:{self.sidecars[name]['admin']}/stats/prometheus")
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
                   if line.startswith(needle))


def _serving(port: int) -> bool:
    try:
        grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(0.2)
        return True
    except grpc.FutureTimeoutError:
        return False


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcMesh]:
    m = GrpcMesh(tmp_path_factory.mktemp("grpc-mesh"))
    try:
        m.start_control(RESOURCES)
        ports = free_ports(20)
        m.add_grpc_workload("client", {"app": "client", "version": "v1"}, "client", False,
                            ports[:5])
        m.add_grpc_workload("web", {"app": "web", "version": "v1"}, "web", True, ports[15:],
                            h2c=True)
        for i, version in enumerate(("v1", "v2"), start=1):
            m.add_grpc_workload(f"greeter-{version}", {"app": "greeter", "version": version},
                                "greeter", True, ports[5 * i:5 * i + 5])
        for name, bound in m.sidecars.items():
            wait_until(f"{name}'s sidecar /ready",
                       partial(lambda p: http_get(f"http://127.0.0.1:{p}/ready")[0] == 200,
                               bound["admin"]), 30, m._dead)
            if name.startswith("greeter"):
                wait_until(f"{name}'s gRPC app serving", partial(_serving, bound["app"]), 20,
                           m._dead)
        for cluster, count in ((f"outbound|50051|v1|{FQDN}", 1), (f"outbound|50051|v2|{FQDN}", 1),
                               (f"outbound|50051||{FQDN}", 2), (f"outbound|8080||{WEB_FQDN}", 1)):
            wait_until(f"client's sidecar has {count} endpoint(s) in {cluster}",
                       partial(lambda c, n: m.endpoints("client", c) == n, cluster, count), 20,
                       m._dead)
        yield m
    finally:
        m.stop()


def via_proxy(mesh: GrpcMesh) -> grpc.Channel:
    """The app's view: target `greeter.demo:50051`, its sidecar as `http_proxy` (CONNECT)."""
    proxy = f"http://127.0.0.1:{mesh.sidecars['client']['outbound']}"
    return grpc.insecure_channel("greeter.demo:50051", options=[("grpc.http_proxy", proxy)])


def via_upstream_port(mesh: GrpcMesh) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{mesh.sidecars['client']['upstream']}")


def call(channel: grpc.Channel, method: str, body: bytes = b"hi") -> dict[str, object]:
    reply = channel.unary_unary(f"/{SERVICE}/{method}")(body, timeout=5)
    out: dict[str, object] = json.loads(reply)
    return out


def test_unary_and_server_streaming_over_mtls_with_the_callers_identity(mesh: GrpcMesh) -> None:
    for make in (via_proxy, via_upstream_port):
        with make(mesh) as channel:
            seen = call(channel, "Hello", b"x" * 100_000)  # larger than one h2 window frame
            assert seen["name"] in {"greeter-v1", "greeter-v2"} and seen["size"] == 100_000
            assert f"URI={CLIENT_ID}" in str(seen["xfcc"]), seen
            assert "By=spiffe://cluster.local/ns/demo/sa/greeter" in str(seen["xfcc"]), seen
            replies = list(channel.unary_stream(f"/{SERVICE}/Count")(b"5", timeout=5))
            assert [json.loads(r)["i"] for r in replies] == [0, 1, 2, 3, 4]

    def logged() -> bool:  # the access log is flushed about once a second
        path = mesh.root / "client.access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return any(e["protocol"] == "HTTP/2" and e["path"] == f"/{SERVICE}/Count"
                   and e.get("grpc_status") == 0 for e in map(json.loads, lines))

    wait_until("an HTTP/2 gRPC line in the client's access log", logged, 5)


def test_weighted_route_on_a_grpc_method_splits_80_20(mesh: GrpcMesh) -> None:
    with via_proxy(mesh) as channel:
        counts = Counter(str(call(channel, "Split")["version"]) for _ in range(500))
    assert sum(counts.values()) == 500
    share = counts["v1"] / 500
    assert abs(share - 0.80) <= 0.06, counts


def test_authorization_policy_denies_a_method_as_permission_denied(mesh: GrpcMesh) -> None:
    with via_proxy(mesh) as channel:
        with pytest.raises(grpc.RpcError) as info:
            call(channel, "Secret")
        err = info.value
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
        assert "rbac_denied" in (err.details() or ""), err.details()
        reasons = dict(err.trailing_metadata() or ()).get("x-hyphal-reason")
        assert reasons == "rbac_denied", err.trailing_metadata()
        assert call(channel, "Hello")["method"] == "Hello"  # the rest of the service is open


def test_killed_version_is_retried_to_the_other_without_client_errors(mesh: GrpcMesh) -> None:
    before = mesh.metric("client", "hyphal_upstream_rq_retry")
    pid = mesh.app_pid("greeter-v2")
    os.kill(pid, signal.SIGKILL)
    wait_until("greeter-v2's app gone", lambda: not _serving(mesh.sidecars["greeter-v2"]["app"]),
               10)
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    with via_proxy(mesh) as channel:
        for _ in range(100):
            assert time.monotonic() < deadline
            seen[str(call(channel, "Hello")["name"])] += 1  # raises on any client error
    assert seen == Counter({"greeter-v1": 100}), seen
    assert mesh.metric("client", "hyphal_upstream_rq_retry") > before


def _spans(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                out.extend(ss["spans"])
    return out


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}


def test_a_grpc_call_leaves_linked_client_and_server_spans(mesh: GrpcMesh) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with via_proxy(mesh) as channel:
        channel.unary_unary(f"/{SERVICE}/Hello")(
            b"t", timeout=5, metadata=(("traceparent", f"00-{trace_id}-{'cd' * 8}-01"),))
    spans_file = mesh.root / "spans.jsonl"
    deadline = time.monotonic() + 10
    while True:  # spans are flushed about once a second
        spans = [s for s in _spans(spans_file) if s["traceId"] == trace_id]
        if len(spans) >= 2:
            break
        assert time.monotonic() < deadline, spans
        time.sleep(0.2)
    client = next(s for s in spans if s["kind"] == 3)  # CLIENT, the caller's sidecar
    server = next(s for s in spans if s["kind"] == 2)  # SERVER, the greeter's sidecar
    assert client["parentSpanId"] == "cd" * 8  # the app's span
    assert server["parentSpanId"] == client["spanId"]
    for span in (client, server):
        attrs = _attrs(span)
        assert attrs["rpc.system"] == "grpc" and attrs["rpc.method"] == "Hello", attrs
        assert str(attrs["rpc.grpc.status_code"]) == "0", attrs


def test_grpc_errors_are_200_with_grpc_response_status(mesh: GrpcMesh) -> None:
    with via_proxy(mesh) as channel, pytest.raises(grpc.RpcError):
        call(channel, "Secret")
    denied = ('response_code="200",response_flags="-",grpc_response_status="7"')
    wait_until("the client's sidecar counts PERMISSION_DENIED as 200 with status 7",
               lambda: mesh.metric("client", "istio_requests_total{") > 0
               and any(denied in line and 'reporter="source"' in line
                       for line in http_get(f"http://127.0.0.1:{mesh.sidecars['client']['admin']}"
                                            "/stats/prometheus")[1].decode().splitlines()), 5)


def test_http11_to_an_http2_service_is_bridged_over_h2(mesh: GrpcMesh) -> None:
    proxy = f"http://127.0.0.1:{mesh.sidecars['client']['outbound']}"
    with httpx.Client(proxy=proxy, timeout=5, trust_env=False) as client:
        get = client.get("http://web.demo:8080/hello?x=1")
        post = client.post("http://web.demo:8080/upload", content=b"u" * 100_000)
        chunks = client.get("http://web.demo:8080/chunks")
    assert get.status_code == 200 and get.http_version == "HTTP/1.1", get.text
    seen = get.json()
    assert seen["name"] == "web" and seen["protocol"] == "h2" and seen["path"] == "/hello?x=1"
    # over mTLS between the sidecars: the web sidecar vouches for the caller's identity
    assert f"URI={CLIENT_ID}" in seen["headers"]["x-forwarded-client-cert"], seen
    assert post.json()["size"] == 100_000
    assert chunks.text == "one,two,three" and chunks.headers["transfer-encoding"] == "chunked"


def test_no_process_is_left_behind(mesh: GrpcMesh) -> None:
    pids = mesh.stop()
    assert pids and not [p for p in pids if pid_alive(p)]
