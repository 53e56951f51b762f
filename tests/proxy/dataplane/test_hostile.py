"""A table of malformed and hostile HTTP/1.1 inputs over raw sockets, each with its answer.

After the table the same proxy must still serve a normal request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from hyphal.proxy.http.context import Timeouts
from hyphal.proxy.runtime.tables import VirtualHost

from .mesh import cluster, config, free_port, outbound_listener, route_to, statuses, table

pytestmark = pytest.mark.e2e

GET = b"GET / HTTP/1.1\r\nHost: product\r\n"


@dataclass(frozen=True)
class Case:
    name: str
    writes: list[bytes]
    expect: list[int]  # final statuses in order ([] = no HTTP answer at all)
    closed: bool = True  # the proxy must close the connection afterwards
    pause: float = 0.0  # between writes
    contains: list[bytes] = field(default_factory=list)
    absent: list[bytes] = field(default_factory=list)
    half_close: bool = False


CASES = [
    Case("content-length with transfer-encoding",
         [b"POST / HTTP/1.1\r\nHost: product\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"], [400]),
    Case("two different content-lengths",
         [b"POST / HTTP/1.1\r\nHost: product\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"], [400]),
    Case("final transfer-encoding not chunked",
         [b"POST / HTTP/1.1\r\nHost: product\r\nTransfer-Encoding: gzip\r\n\r\nabc"], [400]),
    Case("chunked then gzip",
         [b"POST / HTTP/1.1\r\nHost: product\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"], [400]),
    Case("transfer-encoding look-alike",
         [b"POST / HTTP/1.1\r\nHost: product\r\nTransfer-Encoding: xchunked\r\n\r\n"], [400]),
    Case("transfer-encoding twice",
         [b"POST / HTTP/1.1\r\nHost: product\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"], [400]),
    Case("bad chunk size", [b"POST / HTTP/1.1\r\nHost: product\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"], [400]),
    Case("chunk size overflow",
         [b"POST / HTTP/1.1\r\nHost: product\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nx\r\n"], [400]),
    Case("negative content-length", [b"POST / HTTP/1.1\r\nHost: product\r\nContent-Length: -1\r\n\r\n"], [400]),
    Case("non-numeric content-length", [b"POST / HTTP/1.1\r\nHost: product\r\nContent-Length: 1x\r\n\r\n"], [400]),
    Case("obsolete line folding", [GET + b"X-A: one\r\n two\r\n\r\n"], [400]),
    Case("bare LF line endings", [b"GET / HTTP/1.1\nHost: product\n\n"], [400]),
    Case("bare LF after a header", [GET + b"X-A: one\nX-B: two\r\n\r\n"], [400]),
    Case("space in a header name", [GET + b"X A: one\r\n\r\n"], [400]),
    Case("space before the colon", [GET + b"X-A : one\r\n\r\n"], [400]),
    Case("NUL in a header value", [GET + b"X-A: o\x00ne\r\n\r\n"], [400]),
    Case("one oversized header", [GET + b"X-Big: " + b"a" * 40000 + b"\r\n\r\n"], [431]),
    Case("too many headers", [GET + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n"], [431]),
    Case("long URI", [b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: product\r\n\r\n"], [414]),
    Case("TLS bytes to a plaintext listener", [b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40], [400]),
    Case("garbage", [b"\x00\xff\xfe garbage\r\n\r\n"], [400]),
    Case("HTTP/2.0 request line", [b"GET / HTTP/2.0\r\nHost: product\r\n\r\n"], [505]),
    Case("HTTP/0.9 request", [b"GET /\r\n\r\n"], [400]),
    Case("HTTP/1.1 without Host", [b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"], [400]),
    Case("two Host headers", [GET + b"Host: other\r\n\r\n"], [400]),
    Case("unknown expectation", [GET + b"Expect: teapot\r\n\r\n"], [417]),
    Case("https absolute URI (needs CONNECT)", [b"GET https://product/ HTTP/1.1\r\nHost: product\r\n\r\n"], [400], closed=False),
    Case("CONNECT", [b"CONNECT product:443 HTTP/1.1\r\nHost: product:443\r\n\r\n"], [400]),
    Case("slowloris: headers never finish", [GET, b"X-A: 1\r\n"], [408], pause=0.2),
    Case("early close mid-body", [b"POST / HTTP/1.1\r\nHost: product\r\nContent-Length: 100\r\n\r\n0123456789"],
         [], half_close=True),
    Case("pipelined requests answered in order",
         [GET.replace(b"/ ", b"/one ") + b"\r\n" + GET.replace(b"/ ", b"/two ") + b"\r\n"
          + GET.replace(b"/ ", b"/three ") + b"Connection: close\r\n\r\n"], [200, 200, 200],
         contains=[b'"path": "/one"', b'"path": "/two"', b'"path": "/three"']),
    Case("100-continue answered before the body",
         [b"POST / HTTP/1.1\r\nHost: product\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
          b"hello"], [200], pause=0.3, contains=[b"HTTP/1.1 100 Continue\r\n\r\n", b'"body": "hello"']),
    Case("websocket upgrade becomes a tunnel",
         [b"GET /ws HTTP/1.1\r\nHost: product\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", b"ping"],
         [101], closed=False, pause=0.3, contains=[b"upgrade: websocket", b"echo:ping"]),
    Case("HTTP/1.0 without keep-alive closes", [b"GET / HTTP/1.0\r\nHost: product\r\n\r\n"], [200],
         contains=[b"HTTP/1.0 200"]),
    Case("Connection: close is honoured", [GET + b"Connection: close\r\n\r\n"], [200]),
    Case("hop-by-hop and Connection-listed headers stripped",
         [GET + b"Connection: close, x-secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n"], [200],
         absent=[b'"x-secret"', b'"keep-alive"', b'"te"']),
    Case("valid chunked body with extension",
         [b"POST / HTTP/1.1\r\nHost: product\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
          b"3;ext=1\r\nabc\r\n0\r\n\r\n"], [200], contains=[b'"body": "abc"']),
]


async def run_case(port: int, case: Case) -> tuple[bytes, bool]:
    """Returns (bytes answered, whether the proxy closed the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b""
    closed = False
    try:
        for i, part in enumerate(case.writes):
            writer.write(part)
            await writer.drain()
            if case.pause and i < len(case.writes) - 1:
                await asyncio.sleep(case.pause)
        if case.half_close:
            writer.close()
            return b"", True
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.6 if not case.closed else 2.5)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            data += chunk
    finally:
        writer.close()
    return data, closed


async def test_hostile_inputs_table(echo, dataplane):
    app = echo("app")
    port = free_port()
    routes = table("outbound_http", VirtualHost("product", ("product",), (route_to("r", ("app", 1)),)))
    plane = await dataplane(config("1", (outbound_listener(port),), {"outbound_http": routes},
                                   (cluster("app", ("127.0.0.1", app.port)),)),
                            timeouts=Timeouts(header_s=0.5, idle_s=5.0))
    assert len(CASES) >= 25
    failures = []
    for case in CASES:
        data, closed = await run_case(port, case)
        problems = []
        if statuses(data) != case.expect:
            problems.append(f"statuses {statuses(data)} != {case.expect}")
        if case.closed and not closed:
            problems.append("connection left open")
        for needle in case.contains:
            if needle.lower() not in data.lower():
                problems.append(f"missing {needle!r}")
        for needle in case.absent:
            if needle.lower() in data.lower():
                problems.append(f"unexpected {needle!r}")
        if case.expect and case.expect[0] >= 400 and b"x-hyphal-reason" not in data:
            problems.append("local answer without x-hyphal-reason")
        if problems:
            failures.append(f"{case.name}: {'; '.join(problems)} -- {data[:300]!r}")
    assert not failures, "\n".join(failures)
    # the proxy is still healthy
    data, _ = await run_case(port, Case("normal", [GET + b"Connection: close\r\n\r\n"], [200]))
    assert statuses(data) == [200]
    assert plane.stats.counter("hyphal_downstream_rq_rejected", "request_timeout") == 1
