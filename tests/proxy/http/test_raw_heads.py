"""Heads forwarded from their raw header lines (codec `RawLines`): taken only when the head
started at the first byte of a chunk, exactly the parsed headers, and the rebuilt heads mean
the same as the ones built from the header list."""

from __future__ import annotations

import random
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from hyphal.proxy.http.codec import RequestHead, RequestReader, ResponseHead, ResponseReader
from hyphal.proxy.http.relay import Relay
from hyphal.proxy.http.request import upstream_request_head
from hyphal.proxy.router import parse_target
from hyphal.proxy.runtime.tables import ClusterAction, Route, RouteMatch, VirtualHost


def lines_are_headers(block: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    lines = block.split(b"\r\n")
    if lines[-1] != b"" or len(lines) - 1 != len(headers):
        return False
    for line, (name, value) in zip(lines, headers, strict=False):
        got_name, _, got_value = line.partition(b":")
        if got_name != name or got_value.lstrip(b" \t") != value:
            return False
    return True


def test_a_whole_head_carries_its_lines_and_a_split_one_does_not() -> None:
    raw = b"GET /a HTTP/1.1\r\nHost: x\r\nAccept:*/*\r\nX-Request-Id: r1\r\n\r\n"
    head = RequestReader().feed(raw)[0]
    assert isinstance(head, RequestHead) and head.raw is not None
    block, of, drop, request_id, _, _ = head.raw
    assert block == b"Host: x\r\nAccept:*/*\r\nX-Request-Id: r1\r\n" and of is head.headers
    assert drop == [0] and request_id == b"r1"
    reader = RequestReader()
    assert reader.feed(raw[:20]) == []
    split = reader.feed(raw[20:])[0]
    assert isinstance(split, RequestHead) and split.raw is None
    assert split.headers == head.headers


def test_only_the_first_head_of_a_chunk_and_never_one_after_a_partial_method() -> None:
    reader = RequestReader()
    events = reader.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: y\r\n\r\nGE")
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert heads[0].raw is not None and heads[1].raw is None
    rest = reader.feed(b"T /c HTTP/1.1\r\nHost: z\r\n\r\n")
    assert isinstance(rest[0], RequestHead) and rest[0].target == b"/c" and rest[0].raw is None


def test_a_body_that_looks_like_a_head_is_never_taken_for_one() -> None:
    fake = b"GET /a HTTP/1.1\r\nHost: evil\r\nX-Forwarded-Client-Cert: forged\r\n\r\n"
    reader = RequestReader()
    reader.feed(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(fake))
    events = reader.feed(fake + b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert len(heads) == 1 and heads[0].host == b"x" and heads[0].raw is None


def test_a_response_without_a_reason_or_split_in_its_head_has_no_lines() -> None:
    whole = ResponseReader().feed(b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 0\r\n\r\n")[0]
    assert isinstance(whole, ResponseHead) and whole.raw is not None
    assert whole.raw[5] == 1 and whole.raw[2] == []
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200\r\nX-A: ")
    late = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")[0]
    assert isinstance(late, ResponseHead) and late.raw is None
    assert late.headers[0] == (b"X-A", b"HTTP/1.1 200 OK")


def _pieces(rng: random.Random, stream: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(stream)), k=min(rng.randint(0, 4), len(stream) - 1)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@pytest.mark.parametrize("seed", range(3))
def test_lines_always_match_the_parsed_headers_however_the_stream_is_cut(seed: int) -> None:
    rng = random.Random(seed)
    fake = b"GET /a HTTP/1.1\r\nHost: evil\r\n\r\n"
    for _ in range(1500):
        stream = b""
        for _ in range(rng.randint(1, 3)):
            body = rng.choice([b"", b"abc", fake])
            framing = rng.choice([b"Content-Length: %d\r\n" % len(body), b"chunked"])
            if framing == b"chunked":
                body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
                framing = b"Transfer-Encoding: chunked\r\n"
            stream += (rng.choice([b"", b"\r\n"]) + b"GET /" + rng.choice([b"a", b"GET"])
                       + b" HTTP/1.1\r\nHost: h\r\nX-A:" + rng.choice([b" 1", b"GET /a HTTP/1.1"])
                       + b"\r\n" + framing + b"\r\n" + body)
        reader = RequestReader()
        for piece in _pieces(rng, stream):
            for event in reader.feed(piece):
                if isinstance(event, RequestHead) and event.raw is not None:
                    assert event.raw[1] is event.headers
                    assert lines_are_headers(event.raw[0], event.headers), stream


def _parsed(raw: bytes) -> tuple[Any, ...]:
    head = RequestReader().feed(raw)[0]
    assert isinstance(head, RequestHead), raw
    return head.method, head.target, head.headers, head.content_length, head.chunked


@pytest.mark.parametrize("inbound", [False, True])
def test_upstream_head_from_lines_means_the_same_as_from_the_list(inbound: bool) -> None:
    rng = random.Random(7)
    names = [b"Accept", b"X-Request-Id", b"x-forwarded-for", b"X-Forwarded-Proto", b"TE",
             b"X-Forwarded-Client-Cert", b"Keep-Alive", b"Expect", b"Cookie", b"Connection",
             b"X-Hyphal-Deadline", b"grpc-timeout"]
    values = {b"Connection": [b"keep-alive", b"close", b"cookie"], b"Expect": [b"100-continue"],
              b"X-Request-Id": [b"r1", b""]}
    action = ClusterAction.single("c")
    route = Route("r", RouteMatch(), action)
    vhost = VirtualHost("v", ("*",), (route,))
    taken = 0
    for _ in range(800):
        lines = [name + b":" + rng.choice([b" ", b"", b"\t"]) + rng.choice(values.get(name, [b"v"]))
                 for name in rng.sample(names, rng.randint(0, 5))]
        lines.insert(rng.randint(0, len(lines)), rng.choice([b"Host: h:1", b"host:h:1"]))
        lines += rng.choice([[], [b"Content-Length: 2"], [b"Transfer-Encoding: chunked"]])
        raw = b"POST /p HTTP/1.1\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
        head = RequestReader().feed(raw)[0]
        assert isinstance(head, RequestHead) and head.raw is not None
        target = parse_target(head.target, head.host)
        assert target is not None
        built = [upstream_request_head(
            source, target, vhost, route, action.clusters[0], peer_ip="10.0.0.9",
            peer_identity="spiffe://td/ns/a/sa/b", own_identity="spiffe://td/ns/c/sa/d",
            inbound=inbound, downstream_tls=inbound) for source in (head, replace(head, raw=None))]
        (rid_a, a), (rid_b, b) = built
        if head.raw[3] is not None:
            assert rid_a == rid_b == head.raw[3]
        else:
            a, b = a.replace(rid_a, b"ID"), b.replace(rid_b, b"ID")
        taken += a != b
        assert _parsed(a) == _parsed(b), raw
        # The caller's deadline is re-added per try (with_deadline), never passed on as is.
        assert not any(n.lower() in (b"x-hyphal-deadline", b"grpc-timeout")
                       for n, _ in _parsed(a)[2]), a
    assert taken  # the line copy ran (its spacing differs from the list's)


class _Down:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.out.append(data)


def test_response_head_from_lines_means_the_same_as_from_the_list() -> None:
    rng = random.Random(11)
    names = [b"Content-Type", b"Connection", b"Keep-Alive", b"Set-Cookie", b"Trailer", b"X-A"]
    values = {b"Connection": [b"keep-alive", b"close", b"x-a"]}
    ctx = SimpleNamespace(draining=False)
    for _ in range(800):
        lines = [name + b":" + rng.choice([b" ", b""]) + rng.choice(values.get(name, [b"v"]))
                 for name in rng.sample(names, rng.randint(0, 4))]
        lines.insert(rng.randint(0, len(lines)),
                     rng.choice([b"content-length:5", b"Transfer-Encoding: chunked", b"X-B: 1"]))
        status = rng.choice([200, 204, 304, 404])
        raw = b"HTTP/1.1 %d Some Reason\r\n%s\r\n" % (status, b"".join(x + b"\r\n" for x in lines))
        method = rng.choice([b"GET", b"HEAD"])
        version = rng.choice([b"1.1", b"1.0"])
        request = RequestReader().feed(method + b" / HTTP/" + version + b"\r\nHost: a\r\n\r\n")[0]
        assert isinstance(request, RequestHead)
        reader = ResponseReader()
        if method == b"HEAD":
            reader.expect_head()
        head = reader.feed(raw)[0]
        assert isinstance(head, ResponseHead) and head.raw is not None
        results = []
        for source in (head, replace(head, raw=None)):
            down = _Down()
            relay = Relay(down, ctx, request, None, 0.0)  # type: ignore[arg-type]
            relay._commit(source)
            out = ResponseReader()
            out.expect_head()
            again = out.feed(b"".join(down.out))[0]
            assert isinstance(again, ResponseHead)
            results.append((relay.resp_mode, relay.close_after, relay.up_until_close,
                            again.status, again.version, again.content_length, again.chunked,
                            again.connection, sorted((n.lower(), v) for n, v in again.headers)))
        assert results[0] == results[1], raw


def test_the_spelled_lookup_tables_agree_with_the_lower_case_ones() -> None:
    from hyphal.proxy.http import codec

    for spelled, codes in ((codec._REQUEST_SPELLED, codec._REQUEST_CODES),
                           (codec._RESPONSE_SPELLED, codec._RESPONSE_CODES)):
        for name, code in spelled.items():
            assert codes.get(name.lower(), codec._PLAIN) == code, name
    head = RequestReader().feed(b"GET / HTTP/1.1\r\nHOST: a\r\nX-FORWARDED-FOR: 1.2.3.4\r\n"
                                b"Content-Length: 0\r\nuser-agent: u\r\n\r\n")[0]
    assert isinstance(head, RequestHead) and head.host == b"a" and head.content_length == 0
    assert head.raw is not None and head.raw[2] == [0, 1, 2] and head.raw[4] == b"1.2.3.4"
