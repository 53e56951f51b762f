"""Unit tests of the h2 pieces: protocol detection, CONNECT parsing, gRPC rules, header blocks,
the flow-controlled send side over an in-memory transport, and the xDS wiring (translator ->
compiler) of HTTP/2 clusters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, StreamEnded
from hypothesis import given
from hypothesis import strategies as st

from hyphal.control.translate.clusters import build_cluster, build_static_cluster
from hyphal.proxy.compile.clusters import compile_cluster
from hyphal.proxy.compile.types import CompileError
from hyphal.proxy.h2 import grpc
from hyphal.proxy.h2.detect import PREFACE, classify, parse_connect
from hyphal.proxy.h2.endpoint import H2Endpoint
from hyphal.proxy.h2.headers import RequestHead, downstream_block, upstream_block, with_deadline
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    HeaderValue,
    Route,
    RouteMatch,
    VirtualHost,
    WeightedCluster,
)


# ---------------------------------------------------------------- detection
@pytest.mark.parametrize(("data", "outbound", "kind"), [
    (PREFACE, True, "h2"),
    (PREFACE + b"\x00\x00", False, "h2"),
    (PREFACE[:10], True, "more"),
    (b"P", False, "more"),
    (b"CONNECT greeter.demo:50051 HTTP/1.1\r\n", True, "connect"),
    (b"CONN", True, "more"),
    (b"CONNECT x:1 HTTP/1.1\r\n", False, "http1"),  # inbound: CONNECT is plain HTTP/1.1
    (b"GET / HTTP/1.1\r\n", True, "http1"),
    (b"POST", True, "http1"),
])
def test_classify_first_bytes(data: bytes, outbound: bool, kind: str) -> None:
    assert classify(data, outbound) == kind


@given(st.binary(max_size=40), st.booleans())
def test_classify_is_total_and_http1_unless_a_prefix(data: bytes, outbound: bool) -> None:
    kind = classify(data, outbound)
    assert kind in {"h2", "connect", "http1", "more"}
    if kind == "http1":
        assert not PREFACE.startswith(data[:len(PREFACE)]) or not data


def test_parse_connect() -> None:
    assert parse_connect(b"CONNECT greeter.demo:50051 HTTP/1.1\r\nHost: x") is None
    assert parse_connect(b"CONNECT a.b:50051 HTTP/1.1\r\nHost: a.b:50051\r\n\r\nPRI") == (
        "a.b:50051", b"PRI")
    assert parse_connect(b"CONNECT a.b HTTP/1.1\r\n\r\n") == (None, b"")  # no port
    assert parse_connect(b"CONNECT http://a:1/ HTTP/1.1\r\n\r\n")[0] is None  # type: ignore[index]


# ---------------------------------------------------------------- gRPC rules
def test_grpc_rules() -> None:
    assert grpc.is_grpc([(b"content-type", b"application/grpc+proto")])
    assert not grpc.is_grpc([(b"content-type", b"application/json")])
    assert grpc.status_of([(b"grpc-status", b"14")]) == 14
    assert grpc.status_of([(b"grpc-status", b"x")]) is None
    assert grpc.from_http(403) == grpc.PERMISSION_DENIED
    assert grpc.from_http(503) == grpc.UNAVAILABLE
    assert grpc.from_http(504) == grpc.DEADLINE_EXCEEDED
    assert grpc.to_http(grpc.UNAVAILABLE) == 503


def test_grpc_local_reply_is_trailers_only_with_reason() -> None:
    block = dict(grpc.local_reply(403, "rbac_denied", b"rid"))
    assert block[b":status"] == b"200"
    assert block[b"content-type"] == b"application/grpc"
    assert block[b"grpc-status"] == b"7"
    assert block[b"x-hyphal-reason"] == b"rbac_denied"
    assert b"rbac_denied" in block[b"grpc-message"] and block[b"x-request-id"] == b"rid"
    # grpc-message is percent-encoded
    assert dict(grpc.local_reply(503, "caf\u00e9 100%"))[b"grpc-message"].count(b"%") >= 2


# ---------------------------------------------------------------- header blocks
def _route(**kw: Any) -> Route:
    return Route("r", RouteMatch(), ClusterAction.single("c"), **kw)


def test_upstream_block_rules() -> None:
    head = RequestHead.parse([
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/p.S/M"),
        (b":authority", b"greeter:50051"), (b"content-type", b"application/grpc"),
        (b"te", b"trailers"), (b"x-forwarded-client-cert", b"By=forged"),
        (b"x-forwarded-for", b"10.0.0.1"), (b"grpc-timeout", b"1S"), (b"connection", b"x"),
    ])
    vhost = VirtualHost("v", ("*",), (), request_headers_to_add=(HeaderValue("X-Vh", "1"),))
    rid, block = upstream_block(
        head, "/p.S/M", vhost, _route(), WeightedCluster("c", 1), tls=True, peer_ip="1.2.3.4",
        peer_identity="spiffe://td/ns/a/sa/b", own_identity="spiffe://td/ns/a/sa/me",
        inbound=True, downstream_tls=True)
    d = dict(block)
    assert block[:4] == [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/p.S/M"),
                         (b":authority", b"greeter:50051")]
    assert d[b"te"] == b"trailers" and b"connection" not in d and b"grpc-timeout" not in d
    assert d[b"x-forwarded-client-cert"] == b"By=spiffe://td/ns/a/sa/me;URI=spiffe://td/ns/a/sa/b"
    assert d[b"x-forwarded-for"] == b"10.0.0.1, 1.2.3.4" and d[b"x-request-id"] == rid
    assert d[b"x-vh"] == b"1"  # transforms applied, names lower-cased for HTTP/2
    timed = dict(with_deadline(block, 0.25, grpc=True))
    assert timed[b"grpc-timeout"] == b"250000u" and timed[b"x-hyphal-deadline"] == b"250"


def test_request_head_falls_back_to_the_connect_authority() -> None:
    head = RequestHead.parse([(b":method", b"POST"), (b":path", b"/x")], "greeter.demo:50051")
    assert head.authority == "greeter.demo:50051"


def test_downstream_block_transforms() -> None:
    route = _route(response_headers_to_add=(HeaderValue("x-r", "1"),),
                   response_headers_to_remove=("server",))
    out = downstream_block([(b":status", b"200"), (b"server", b"app"), (b"connection", b"x")],
                           route, None, [(b"set-cookie", b"a=b")])
    assert out == [(b":status", b"200"), (b"x-r", b"1"), (b"set-cookie", b"a=b")]


# ---------------------------------------------------------------- flow control
class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


def _pair() -> tuple[H2Endpoint, MemoryTransport, H2Connection]:
    """Our server-side endpoint and a peer client H2Connection (default 65535 windows)."""
    ours = H2Endpoint(H2Connection(H2Configuration(client_side=False, header_encoding=None)))
    ours.conn.initiate_connection()
    transport = MemoryTransport()
    ours.start(transport)
    peer = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    peer.initiate_connection()
    peer.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
                          (b":authority", b"x")], end_stream=True)
    ours.conn.receive_data(peer.data_to_send())
    peer.receive_data(transport.take())
    ours.conn.receive_data(peer.data_to_send())  # settings ack
    return ours, transport, peer


def test_send_side_waits_for_the_peer_window_and_calls_on_sent_in_order() -> None:
    ours, transport, peer = _pair()
    sent: list[int] = []
    ours.send_headers(1, [(b":status", b"200")], False)
    ours.send_data(1, b"a" * 60_000, False, lambda: sent.append(1))
    ours.send_data(1, b"b" * 60_000, True, lambda: sent.append(2))
    got = b"".join(e.data for e in peer.receive_data(transport.take())
                   if isinstance(e, DataReceived))
    assert len(got) == 65_535 and sent == [1]  # the peer's window: the rest waits
    assert ours.queued(1)
    peer.increment_flow_control_window(100_000, 1)
    peer.increment_flow_control_window(100_000)
    ours.conn.receive_data(peer.data_to_send())
    ours.pump_all()
    ours.flush()
    events = peer.receive_data(transport.take())
    rest = b"".join(e.data for e in events if isinstance(e, DataReceived))
    assert len(got) + len(rest) == 120_000 and sent == [1, 2]
    assert any(isinstance(e, StreamEnded) for e in events) and not ours.queued(1)


def test_dropped_stream_gives_its_sources_their_window_back() -> None:
    ours, _transport, _peer = _pair()
    sent: list[str] = []
    ours.send_headers(1, [(b":status", b"200")], False)
    ours.send_data(1, b"x" * 70_000, False, lambda: sent.append("big"))
    assert sent == []
    ours.reset(1)
    assert sent == ["big"]  # acknowledged upstream even though it never left


def test_acks_wait_while_the_transport_is_paused() -> None:
    ours = H2Endpoint(H2Connection(H2Configuration(client_side=False, header_encoding=None)))
    ours.conn.initiate_connection()
    transport = MemoryTransport()
    ours.start(transport)
    peer = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    peer.initiate_connection()
    peer.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/"),
                          (b":authority", b"x")])
    for _ in range(4):
        peer.send_data(1, b"z" * 10_000)
    events = ours.conn.receive_data(peer.data_to_send())
    assert any(isinstance(e, RequestReceived) for e in events)
    transport.take()
    ours.pause_writing()
    ours.ack(1, 40_000)
    assert transport.take() == b""  # held: our peer must not send more yet
    ours.resume_writing()
    assert transport.take() != b""  # WINDOW_UPDATE now


# ---------------------------------------------------------------- xDS wiring
def test_translated_http2_clusters_compile_to_http2_specs() -> None:
    out = build_cluster("outbound|50051||g.demo.svc.cluster.local", tls_sans=["spiffe://a"],
                        http2=True)
    spec = compile_cluster(out).spec
    assert spec.http2 and spec.tls is not None and spec.max_concurrent_streams == 100
    assert compile_cluster(build_static_cluster("inbound|50051||", "127.0.0.1", 9,
                                                http2=True)).spec.http2
    assert not compile_cluster(build_cluster("outbound|80||h")).spec.http2
    # proxyless gRPC clients never get the sidecar's HTTP/2 option
    assert not build_cluster("x", http2=True, proxyless=True).typed_extension_protocol_options


def test_compiler_names_unsupported_protocol_options() -> None:
    c = build_cluster("c", http2=True)
    c.typed_extension_protocol_options["envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"]\
        .CopyFrom(c.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"])
    with pytest.raises(CompileError, match="TcpProtocolOptions"):
        compile_cluster(c)
    legacy = build_cluster("d")
    legacy.http2_protocol_options.SetInParent()
    with pytest.raises(CompileError, match="http2_protocol_options: not supported"):
        compile_cluster(legacy)


# ---------------------------------------------------------------- GOAWAY that keeps streams
def test_graceful_connections_finish_streams_across_a_goaway() -> None:
    from h2.events import ConnectionTerminated, ResponseReceived, StreamReset

    from hyphal.proxy.h2.endpoint import GracefulH2Connection

    server = GracefulH2Connection(H2Configuration(client_side=False, header_encoding=None))
    client = GracefulH2Connection(H2Configuration(client_side=True, header_encoding=None))
    server.initiate_connection()
    client.initiate_connection()
    request = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
               (b":authority", b"x")]
    client.send_headers(1, request, end_stream=True)
    server.receive_data(client.data_to_send())
    server.goaway(1)  # first: no stream above 1 will be served
    events = client.receive_data(server.data_to_send())
    assert [e.last_stream_id for e in events if isinstance(e, ConnectionTerminated)] == [1]
    # stream 1 still completes in both directions, and the peer may still send
    server.send_headers(1, [(b":status", b"200")])
    server.send_data(1, b"done", end_stream=True)
    events = client.receive_data(server.data_to_send())
    assert any(isinstance(e, ResponseReceived) for e in events)
    assert any(isinstance(e, DataReceived) and e.data == b"done" for e in events)
    client.send_headers(3, request, end_stream=True)  # a stream it should not have sent...
    events = server.receive_data(client.data_to_send())
    assert any(isinstance(e, RequestReceived) for e in events)  # ...the server refuses it
    server.reset_stream(3, 7)
    assert any(isinstance(e, StreamReset) for e in client.receive_data(server.data_to_send()))


def test_compiler_reads_connection_keepalive() -> None:
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    c = build_cluster("c", http2=True)
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    hpo = http_protocol_options_pb2.HttpProtocolOptions()
    c.typed_extension_protocol_options[key].Unpack(hpo)
    ka = hpo.explicit_http_config.http2_protocol_options.connection_keepalive
    ka.interval.FromMilliseconds(30_000)
    ka.timeout.FromMilliseconds(5_000)
    ka.interval_jitter.value = 10
    c.typed_extension_protocol_options[key].Pack(hpo)
    keepalive = compile_cluster(c).spec.h2_keepalive
    assert keepalive is not None
    assert (keepalive.interval_s, keepalive.timeout_s, keepalive.jitter) == (30.0, 5.0, 0.1)
    ka.connection_idle_interval.FromMilliseconds(1)
    c.typed_extension_protocol_options[key].Pack(hpo)
    with pytest.raises(CompileError, match="connection_idle_interval: not supported"):
        compile_cluster(c)
