"""Sans-I/O HTTP pieces: codec events and limits, hop-by-hop rules, transforms, request head."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hyphal.proxy.http.codec import (
    Body,
    Limits,
    MessageEnd,
    ParseError,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    Upgrade,
)
from hyphal.proxy.http.headers import (
    apply_transforms,
    encode_chunk,
    local_response,
    new_request_id,
    strip_hop_by_hop,
    xfcc_value,
)
from hyphal.proxy.http.request import upstream_request_head
from hyphal.proxy.router import parse_target
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    HeaderValue,
    PathKind,
    PathMatch,
    Route,
    RouteMatch,
    VirtualHost,
    WeightedCluster,
)


def test_request_events_in_order_for_pipelined_requests():
    events = RequestReader().feed(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RequestHead", "Body", "MessageEnd", "RequestHead", "MessageEnd"]
    head = events[0]
    assert isinstance(head, RequestHead) and head.content_length == 3 and head.keep_alive
    assert events[1] == Body(b"abc")


def test_body_split_across_feeds():
    reader = RequestReader()
    first = reader.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
    second = reader.feed(b"c\r\n0\r\n\r\n")
    assert isinstance(first[0], RequestHead) and first[0].chunked
    body = b"".join(e.data for e in first + second if isinstance(e, Body))
    assert body == b"abc" and isinstance(second[-1], MessageEnd)


def test_limits_map_to_414_and_431():
    limits = Limits(max_uri=100, max_header_bytes=200, max_headers=5)
    assert RequestReader(limits).feed(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n")[-1] == ParseError(
        414, "request URI exceeds the size limit")
    too_big = RequestReader(limits).feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 300 + b"\r\n\r\n")[-1]
    assert isinstance(too_big, ParseError) and too_big.status == 431
    many = b"".join(b"X%d: 1\r\n" % i for i in range(6))
    assert RequestReader(limits).feed(b"GET / HTTP/1.1\r\n" + many + b"\r\n")[-1].status == 431


def test_reader_stops_after_an_error():
    reader = RequestReader()
    assert isinstance(reader.feed(b"GET / HTTP/1.1\r\nX : y\r\n\r\n")[-1], ParseError)
    assert reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == []


def test_upgrade_hands_over_the_rest():
    events = RequestReader().feed(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW")
    assert isinstance(events[0], RequestHead) and events[0].upgrade
    assert events[-1] == Upgrade(b"RAW")


def test_response_reader_head_request_and_informational():
    reader = ResponseReader()
    reader.expect_head()
    events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert isinstance(events[0], ResponseHead) and events[0].content_length == 10
    assert events[-1] == MessageEnd(False) and reader.stale
    events = ResponseReader().feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert [e.status for e in events if isinstance(e, ResponseHead)] == [100, 204]


def test_hop_by_hop_and_connection_listed_headers_are_removed():
    headers = [(b"Connection", b"keep-alive, X-Private"), (b"Keep-Alive", b"5"),
               (b"X-Private", b"1"), (b"TE", b"trailers"), (b"Upgrade", b"h2c"),
               (b"Content-Length", b"3"), (b"Accept", b"*/*")]
    assert strip_hop_by_hop(headers) == [(b"Accept", b"*/*")]
    assert (b"Upgrade", b"h2c") in strip_hop_by_hop(headers, keep_upgrade=True)


def test_transforms_remove_then_add_or_overwrite():
    headers = [(b"a", b"1"), (b"b", b"2"), (b"b", b"3")]
    out = apply_transforms(list(headers), ("A",), (HeaderValue("b", "9", append=False),
                                                    HeaderValue("c", "x")))
    assert out == [(b"b", b"9"), (b"c", b"x")]


def test_xfcc_request_id_and_local_response():
    assert xfcc_value("spiffe://td/ns/a/sa/b", "spiffe://td/ns/c/sa/d") == \
        b"By=spiffe://td/ns/a/sa/b;URI=spiffe://td/ns/c/sa/d"
    rid = new_request_id()
    assert len(rid) == 36 and rid[14:15] == b"4"
    raw = local_response(503, "no_healthy_upstream", b"r1", close=True)
    assert raw.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"x-hyphal-reason: no_healthy_upstream\r\n" in raw and b"connection: close" in raw
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_reader_never_raises_on_arbitrary_bytes(data):
    events = RequestReader().feed(data)
    assert all(isinstance(e, RequestHead | Body | MessageEnd | Upgrade | ParseError) for e in events)


def test_upstream_head_rewrites_for_the_hop():
    reader = RequestReader()
    head = reader.feed(b"POST http://product:8080/old/x?q=1 HTTP/1.1\r\nHost: ignored\r\n"
                       b"Connection: x-hop\r\nX-Hop: 1\r\nX-Forwarded-For: 10.0.0.1\r\n"
                       b"X-Forwarded-Client-Cert: forged\r\nExpect: 100-continue\r\n"
                       b"Content-Length: 2\r\n\r\n")[0]
    assert isinstance(head, RequestHead)
    target = parse_target(head.target, head.host)
    assert target is not None and target.proxy_form and target.authority == "product:8080"
    route = Route("r", RouteMatch(path=PathMatch(PathKind.PREFIX, "/old/")),
                  ClusterAction((WeightedCluster("c", 1),)), prefix_rewrite="/new/",
                  request_headers_to_add=(HeaderValue("x-added", "yes"),))
    vhost = VirtualHost("v", ("*",), (route,))
    rid, raw = upstream_request_head(head, target, vhost, route, route.action.clusters[0],
                                     peer_ip="127.0.0.1", peer_identity="spiffe://td/ns/a/sa/b",
                                     own_identity="spiffe://td/ns/c/sa/d", inbound=True,
                                     downstream_tls=True)
    text = raw.decode()
    assert text.startswith("POST /new/x?q=1 HTTP/1.1\r\nHost: product:8080\r\n")
    assert "X-Hop" not in text and "Expect" not in text and "forged" not in text
    assert "x-forwarded-for: 10.0.0.1, 127.0.0.1\r\n" in text
    assert "x-forwarded-client-cert: By=spiffe://td/ns/c/sa/d;URI=spiffe://td/ns/a/sa/b" in text
    assert "x-forwarded-proto: https" in text and "x-added: yes" in text
    assert "Content-Length: 2\r\n" in text and f"x-request-id: {rid.decode()}" in text


def test_parse_target_forms():
    assert parse_target(b"/a?b=1", b"h:1").origin == "/a?b=1"
    assert parse_target(b"http://h?x=1", None).origin == "/?x=1"
    assert parse_target(b"https://h/", None) is None
    assert parse_target(b"h:443", b"h:443") is None
    assert parse_target(b"http://user@h/", None) is None
    assert parse_target(b"/a", None) is None


_BUDGET_NAMES = [b"x-hyphal-deadline", b"X-Hyphal-Deadline", b"X-HYPHAL-DEADLINE",
                 b"x-Hyphal-deadline", b"grpc-timeout", b"Grpc-Timeout", b"GRPC-timeout",
                 b"content-type", b"Content-Type", b"CONTENT-type", b"accept", b"x-other",
                 b"x-hyphal-deadlinE", b"grpc-timeouts", b"content-typ"]
_BUDGET_VALUES = [b"100", b"5S", b"application/grpc", b"application/grpc+proto",
                  b"Application/grpc", b"text/plain", b"junk"]


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_BUDGET_NAMES), st.sampled_from(_BUDGET_VALUES)),
                max_size=6))
def test_reader_flags_exactly_the_heads_caller_budget_reads(headers):
    from hyphal.proxy.upstream.policy import NO_BUDGET, caller_budget

    raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(
        n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    [head, _] = RequestReader().feed(raw)
    assert isinstance(head, RequestHead)
    if not head.budget:  # the exchange then skips caller_budget
        assert caller_budget(head.headers) is NO_BUDGET


def test_reader_budget_flag_for_plain_and_deadline_heads():
    plain, _ = RequestReader().feed(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: text/x\r\n\r\n")
    timed, _ = RequestReader().feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Hyphal-Deadline: 9\r\n\r\n")
    grpc, _ = RequestReader().feed(
        b"POST / HTTP/1.1\r\nHost: a\r\ncontent-type: application/grpc\r\n\r\n")
    assert isinstance(plain, RequestHead) and not plain.budget
    assert isinstance(timed, RequestHead) and timed.budget
    assert isinstance(grpc, RequestHead) and grpc.budget
