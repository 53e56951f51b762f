"""Two in-process data planes (outbound -> mTLS with ALPN h2 -> inbound) in front of a grpcio
server, called by a grpcio client: the h2 path with real sockets but no processes."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hyphal.local.model import MeshSpec, PortSpec, ServiceSpec, WorkloadSpec
from hyphal.local.plan import plan_run
from hyphal.proxy.dataplane import DataPlane
from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    ClusterSpec,
    DownstreamTls,
    EndpointSpec,
    ListenerKind,
    ListenerSpec,
    PathKind,
    PathMatch,
    ProxyConfig,
    RetryPolicy,
    Route,
    RouteMatch,
    RouteTable,
    UpstreamTls,
    VirtualHost,
)
from hyphal.proxy.transport.tls import TlsMaterial
from hyphal.telemetry import tracing
from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import Stats

pytestmark = pytest.mark.timeout(60)
CALLER = "spiffe://cluster.local/ns/demo/sa/client"
SERVER = "spiffe://cluster.local/ns/demo/sa/greeter"


def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "h2 test root")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _material(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], uri: str) -> TlsMaterial:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                           critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return TlsMaterial(cert.public_bytes(pem),
                       key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()),
                       ca_cert.public_bytes(pem))


class App:
    """A grpcio server: Hello echoes metadata, Slow sleeps, Flaky fails UNAVAILABLE n times."""

    def __init__(self) -> None:
        self.flaky_left = 0
        self.pushback_calls: list[float] = []

        def hello(req: bytes, ctx: grpc.ServicerContext) -> bytes:
            md = dict(ctx.invocation_metadata())
            return json.dumps({"xfcc": md.get("x-forwarded-client-cert", ""),
                               "timeout": ctx.time_remaining()}).encode()

        def slow(req: bytes, ctx: grpc.ServicerContext) -> bytes:
            time.sleep(1.0)
            return b"late"

        def flaky(req: bytes, ctx: grpc.ServicerContext) -> bytes:
            if self.flaky_left > 0:
                self.flaky_left -= 1
                ctx.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return b"ok"

        def pushback(req: bytes, ctx: grpc.ServicerContext) -> bytes:
            self.pushback_calls.append(time.monotonic())
            if len(self.pushback_calls) == 1:
                ctx.set_trailing_metadata((("grpc-retry-pushback-ms", req.decode()),))
                ctx.abort(grpc.StatusCode.UNAVAILABLE, "later")
            return b"ok"

        handlers = {n: grpc.unary_unary_rpc_method_handler(f)
                    for n, f in (("Hello", hello), ("Slow", slow), ("Flaky", flaky),
                                 ("Pushback", pushback))}
        self.server = grpc.server(futures.ThreadPoolExecutor(8))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("t.Greeter", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


@pytest.fixture
def app() -> Iterator[App]:
    server = App()
    yield server
    server.server.stop(0)


@pytest.fixture
async def mesh(app: App) -> AsyncIterator[dict[str, Any]]:
    ca = _ca()
    inbound = ListenerSpec("inbound|50051", "127.0.0.1", 0, ListenerKind.INBOUND_HTTP,
                           tls=DownstreamTls(), route_config="in")
    in_routes = RouteTable.build("in", (VirtualHost("in", ("*",), (
        Route("in", RouteMatch(), ClusterAction.single("inbound|50051||"), timeout_s=None),)),))
    server_plane = DataPlane(ConfigHolder(), _material(ca, SERVER), AccessLog(None), Stats())
    await server_plane.apply(ProxyConfig(
        "1", (inbound,), {"in": in_routes},
        {"inbound|50051||": ClusterSpec("inbound|50051||",
                                        (EndpointSpec("127.0.0.1", app.port),), http2=True)},
        identity=SERVER))
    in_port = server_plane.port_of(inbound.name)
    out = ListenerSpec("outbound_http", "127.0.0.1", 0, ListenerKind.OUTBOUND_HTTP,
                       route_config="outbound_http")
    cluster = ClusterSpec("outbound|50051||greeter.demo.svc.cluster.local",
                          (EndpointSpec("127.0.0.1", in_port),),
                          tls=UpstreamTls("sni", frozenset({SERVER})), http2=True)
    h1 = ClusterSpec("outbound|80||web", (EndpointSpec("127.0.0.1", 9),))
    routes = (
        Route("h1", RouteMatch(PathMatch(PathKind.PREFIX, "/t.Greeter/ToH1")),
              ClusterAction.single(h1.name)),
        Route("g", RouteMatch(PathMatch(PathKind.PREFIX, "/t.Greeter/")),
              ClusterAction.single(cluster.name), retry=RetryPolicy(num_retries=2)),
    )
    table = RouteTable.build("outbound_http", (VirtualHost(
        "greeter", ("greeter.demo:50051",), routes),))
    stats = Stats()
    client_plane = DataPlane(ConfigHolder(), _material(ca, CALLER), AccessLog(None), stats)
    await client_plane.apply(ProxyConfig("1", (out,), {"outbound_http": table},
                                         {cluster.name: cluster, h1.name: h1},
                                         identity=CALLER))
    try:
        yield {"port": client_plane.port_of(out.name), "stats": stats}
    finally:
        await client_plane.close()
        await server_plane.close()


def _channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel("greeter.demo:50051",
                                 options=[("grpc.http_proxy", f"http://127.0.0.1:{port}")])


async def test_grpc_over_connect_and_mtls_alpn_h2_carries_xfcc_and_deadline(
        mesh: dict[str, Any]) -> None:
    def run() -> dict[str, Any]:
        with _channel(mesh["port"]) as ch:
            reply: dict[str, Any] = json.loads(ch.unary_unary("/t.Greeter/Hello")(b"", timeout=3))
            return reply
    seen = await asyncio.to_thread(run)
    assert seen["xfcc"] == f"By={SERVER};URI={CALLER}"
    assert 0 < seen["timeout"] <= 3.0  # grpc-timeout went on, re-encoded per hop


async def test_grpc_timeout_is_the_deadline(mesh: dict[str, Any]) -> None:
    def run() -> tuple[grpc.StatusCode, float]:
        with _channel(mesh["port"]) as ch:
            t0 = time.monotonic()
            try:
                ch.unary_unary("/t.Greeter/Slow")(b"", timeout=0.3)
            except grpc.RpcError as exc:
                return exc.code(), time.monotonic() - t0
            raise AssertionError("a 1 s call under a 0.3 s deadline succeeded")
    code, took = await asyncio.to_thread(run)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and took < 0.9


async def test_trailers_only_unavailable_is_retried(mesh: dict[str, Any], app: App) -> None:
    app.flaky_left = 2

    def run() -> bytes:
        with _channel(mesh["port"]) as ch:
            out: bytes = ch.unary_unary("/t.Greeter/Flaky")(b"", timeout=3)
            return out
    assert await asyncio.to_thread(run) == b"ok"
    assert mesh["stats"].counter("hyphal_upstream_rq_retry",
                                 "outbound|50051||greeter.demo.svc.cluster.local") == 2


async def test_proxy_errors_are_grpc_errors_with_a_reason(mesh: dict[str, Any]) -> None:
    def run(method: str) -> grpc.RpcError:
        with _channel(mesh["port"]) as ch:
            try:
                ch.unary_unary(method)(b"", timeout=3)
            except grpc.RpcError as exc:
                return exc
            raise AssertionError(f"{method} succeeded")
    no_route = await asyncio.to_thread(run, "/other.Service/M")
    assert no_route.code() == grpc.StatusCode.UNIMPLEMENTED
    assert dict(no_route.trailing_metadata())["x-hyphal-reason"] == "no_route"
    to_h1 = await asyncio.to_thread(run, "/t.Greeter/ToH1")
    assert to_h1.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(to_h1.trailing_metadata())["x-hyphal-reason"] == "upstream_protocol_unsupported"


def test_local_plan_gives_grpc_services_upstream_ports(tmp_path: Path) -> None:
    class Ports:
        last = 20000

        def allocate(self) -> int:
            self.last += 1
            return self.last

    svc = ServiceSpec("greeter", "demo", (PortSpec("grpc", 50051, "GRPC"),), {"app": "g"})
    caller = WorkloadSpec("client", "demo", "client", {"app": "client"}, (), ("true",))
    plan = plan_run(MeshSpec(tmp_path, (caller,), (svc,)), tmp_path / "run",
                    Ports())  # type: ignore[arg-type]
    replica = plan.replicas[0]
    local = replica.upstream_ports["greeter.demo.svc.cluster.local:50051"]
    env = replica.app_env()
    assert env["GRPC_GREETER_TARGET"] == f"127.0.0.1:{local}"
    assert env["GREETER_SERVICE_HOST"] == "127.0.0.1"
    assert env["GREETER_SERVICE_PORT"] == str(local)


async def test_a_sampled_grpc_call_makes_linked_client_and_server_spans(
        mesh: dict[str, Any]) -> None:
    spans: list[tracing.SpanRecord] = []
    previous = tracing.TRACER
    tracing.install(tracing.Tracer(tracing.TracingSettings(sampling=1.0), spans.append))
    try:
        def run() -> None:
            with _channel(mesh["port"]) as ch:
                ch.unary_unary("/t.Greeter/Hello")(b"", timeout=3)
                with pytest.raises(grpc.RpcError):
                    ch.unary_unary("/t.Greeter/Nope")(b"", timeout=3)
        await asyncio.to_thread(run)
    finally:
        tracing.install(previous)
    by_kind = {(s.kind, dict(s.attributes)["rpc.method"]): s for s in spans}
    client = by_kind[(tracing.SPAN_KIND_CLIENT, "Hello")]
    server = by_kind[(tracing.SPAN_KIND_SERVER, "Hello")]
    assert server.trace_id == client.trace_id and server.parent_span_id == client.span_id
    attrs = dict(client.attributes)
    assert attrs["rpc.system"] == "grpc" and attrs["rpc.service"] == "t.Greeter"
    assert attrs["rpc.grpc.status_code"] == 0 and attrs["http.response.status_code"] == 200
    failed = dict(by_kind[(tracing.SPAN_KIND_SERVER, "Nope")].attributes)
    assert failed["rpc.grpc.status_code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]


@pytest.mark.parametrize(("pushback", "retried"), [("300", True), ("-1", False)])
async def test_grpc_retry_pushback_sets_the_wait_or_stops_retries(
        mesh: dict[str, Any], app: App, pushback: str, retried: bool) -> None:
    def run() -> grpc.StatusCode:
        with _channel(mesh["port"]) as ch:
            try:
                ch.unary_unary("/t.Greeter/Pushback")(pushback.encode(), timeout=3)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK
    code = await asyncio.to_thread(run)
    calls = app.pushback_calls
    if retried:
        assert code == grpc.StatusCode.OK and len(calls) == 2
        assert calls[1] - calls[0] >= 0.29  # the server's wait, not the 25 ms backoff
    else:
        assert code == grpc.StatusCode.UNAVAILABLE and len(calls) == 1


async def test_grpc_errors_count_as_200_with_their_grpc_response_status(
        mesh: dict[str, Any]) -> None:
    def run() -> None:
        with _channel(mesh["port"]) as ch:
            ch.unary_unary("/t.Greeter/Hello")(b"", timeout=3)
            for method in ("/t.Greeter/Nope", "/other.Service/M"):  # app's and proxy's error
                with pytest.raises(grpc.RpcError):
                    ch.unary_unary(method)(b"", timeout=3)
    await asyncio.to_thread(run)
    lines = [line for line in mesh["stats"].render().splitlines()
             if line.startswith("istio_requests_total{")]
    assert len(lines) == 3, lines
    statuses = sorted(line.split('grpc_response_status="')[1].split('"')[0] for line in lines)
    assert statuses == ["0", "12", "12"]  # OK, UNIMPLEMENTED from the app and for no route
    assert all('response_code="200"' in line for line in lines)
    assert any('response_flags="no_route"' in line for line in lines)
