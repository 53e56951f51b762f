"""Trace context parsing, propagation, sampling decisions and the OTLP/JSON shape."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from hyphal.telemetry import tracing
from hyphal.telemetry.otlp import SpanBatcher, encode_request, file_export, start_tracer
from hyphal.telemetry.tracing import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    SpanRecord,
    Tracer,
    TracingSettings,
    parse_b3_single,
    parse_context,
    parse_traceparent,
    settings_from,
)

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
SID = "00f067aa0ba902b7"
TP = f"00-{TID}-{SID}-01".encode()


def test_traceparent_valid_and_flags() -> None:
    ctx = parse_traceparent(TP)
    assert ctx is not None and (ctx.trace_id, ctx.span_id, ctx.sampled) == (TID, SID, True)
    off = parse_traceparent(f"00-{TID}-{SID}-00".encode())
    assert off is not None and off.sampled is False
    upper = parse_traceparent(f"00-{TID.upper()}-{SID}-01".encode())
    assert upper is not None and upper.trace_id == TID


@pytest.mark.parametrize("value", [
    b"", b"garbage", f"ff-{TID}-{SID}-01".encode(), f"00-{'0' * 32}-{SID}-01".encode(),
    f"00-{TID}-{'0' * 16}-01".encode(), f"00-{TID}-{SID}-01-extra".encode(),
    f"00-{TID[:-1]}x-{SID}-01".encode(), f"00_{TID}-{SID}-01".encode(),
])
def test_traceparent_invalid_is_absent(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_traceparent_future_version_may_append() -> None:
    ctx = parse_traceparent(f"01-{TID}-{SID}-01-whatever".encode())
    assert ctx is not None and ctx.sampled


def test_b3_single_and_multi() -> None:
    ctx = parse_b3_single(f"{TID}-{SID}-1-{'1' * 16}".encode())
    assert ctx is not None and (ctx.trace_id, ctx.span_id, ctx.sampled) == (TID, SID, True)
    short = parse_b3_single(f"{TID[16:]}-{SID}".encode())
    assert short is not None and short.trace_id == "0" * 16 + TID[16:] and short.sampled is None
    deny = parse_b3_single(b"0")
    assert deny is not None and deny.sampled is False and deny.trace_id == ""
    assert parse_b3_single(f"{TID}-{SID}-x".encode()) is None
    multi = parse_context([(b"X-B3-TraceId", TID.encode()), (b"X-B3-SpanId", SID.encode()),
                           (b"X-B3-Sampled", b"1")])
    assert multi is not None and multi.style == "b3multi" and multi.sampled
    debug = parse_context([(b"x-b3-traceid", TID.encode()), (b"x-b3-spanid", SID.encode()),
                           (b"x-b3-flags", b"1")])
    assert debug is not None and debug.sampled is True


def test_traceparent_wins_over_b3_and_bad_traceparent_falls_back() -> None:
    other = "1" * 32
    ctx = parse_context([(b"b3", f"{other}-{SID}-1".encode()), (b"Traceparent", TP)])
    assert ctx is not None and ctx.trace_id == TID
    ctx = parse_context([(b"traceparent", b"nope"), (b"b3", f"{other}-{SID}-1".encode())])
    assert ctx is not None and ctx.trace_id == other
    assert parse_context([(b"host", b"x")]) is None


def _tracer(sampling: float, seed: int = 1) -> tuple[Tracer, list[SpanRecord]]:
    spans: list[SpanRecord] = []
    return Tracer(TracingSettings(sampling), sink=spans.append, rng=random.Random(seed)), spans


def test_incoming_decision_is_honoured() -> None:
    never, _ = _tracer(0.0)
    span = never.begin([(b"traceparent", TP)], inbound=False, start_wall=1.0)
    assert span is not None and span.trace_id == TID and span.parent_span_id == SID
    assert span.kind == SPAN_KIND_CLIENT and span.span_id != SID
    always, _ = _tracer(1.0)
    assert always.begin([(b"traceparent", f"00-{TID}-{SID}-00".encode())], False, 1.0) is None
    assert always.begin([(b"b3", b"0")], False, 1.0) is None


def test_sampling_rate_without_context() -> None:
    tracer, _ = _tracer(0.1, seed=7)
    sampled = sum(tracer.begin([], False, 1.0) is not None for _ in range(10_000))
    assert 850 < sampled < 1150
    root = _tracer(1.0)[0].begin([], True, 1.0)
    assert root is not None and root.parent_span_id == "" and len(root.trace_id) == 32
    assert root.kind == SPAN_KIND_SERVER


def test_propagation_replaces_trace_headers_and_keeps_b3_style() -> None:
    tracer, _ = _tracer(0.0)
    b3 = [(b"b3", f"{TID}-{SID}-1".encode()), (b"tracestate", b"a=b"), (b"x", b"y")]
    span = tracer.begin(b3, False, 1.0)
    assert span is not None
    out = span.inject(b3)
    names = [n for n, _ in out]
    assert names.count(b"traceparent") == 1 and names.count(b"b3") == 1
    assert (b"tracestate", b"a=b") in out and (b"x", b"y") in out
    assert dict(out)[b"traceparent"] == f"00-{TID}-{span.span_id}-01".encode()
    assert dict(out)[b"b3"] == f"{TID}-{span.span_id}-1".encode()
    # Two hops: the next sidecar's span is the child of this one.
    nxt = tracer.begin(out, True, 2.0)
    assert nxt is not None and nxt.trace_id == TID and nxt.parent_span_id == span.span_id


def test_span_record_and_otlp_json_shape() -> None:
    tracer, spans = _tracer(1.0)
    span = tracer.begin([(b"traceparent", TP)], False, 1.5)
    assert span is not None
    tracer.end(span, end_wall=1.75, method="GET", authority="product:8080",
               path="/product/1?x=1", status=503, reason="no_healthy_upstream",
               peer_identity="spiffe://cluster.local/ns/shop/sa/product")
    doc = encode_request(spans, (("service.name", "frontend"),))
    json.dumps(doc)  # plain JSON
    rs = doc["resourceSpans"][0]
    assert rs["resource"]["attributes"] == [
        {"key": "service.name", "value": {"stringValue": "frontend"}}]
    s = rs["scopeSpans"][0]["spans"][0]
    assert s["traceId"] == TID and s["parentSpanId"] == SID and len(s["spanId"]) == 16
    assert s["kind"] == SPAN_KIND_CLIENT
    assert s["startTimeUnixNano"] == "1500000000" and s["endTimeUnixNano"] == "1750000000"
    attrs = {a["key"]: a["value"] for a in s["attributes"]}
    assert attrs["http.request.method"] == {"stringValue": "GET"}
    assert attrs["url.path"] == {"stringValue": "/product/1"}
    assert attrs["http.response.status_code"] == {"intValue": "503"}
    assert attrs["server.address"] == {"stringValue": "product"}
    assert attrs["hyphal.reason"] == {"stringValue": "no_healthy_upstream"}
    assert attrs["hyphal.peer.identity"]["stringValue"].endswith("/sa/product")
    assert s["status"] == {"code": 2, "message": "no_healthy_upstream"}


def test_server_4xx_is_not_an_error_but_client_4xx_is() -> None:
    tracer, spans = _tracer(1.0)
    for inbound in (True, False):
        span = tracer.begin([], inbound, 1.0)
        assert span is not None
        tracer.end(span, end_wall=1.1, method="GET", authority="a", path="/", status=404,
                   reason="-", peer_identity=None)
    assert [s.status_code for s in spans] == [0, 2]


def test_settings_env_overrides_and_errors() -> None:
    s = settings_from({"sampling": 0.5}, env={"HYPHAL_TRACE_SAMPLING": "1",
                                               "HYPHAL_TRACE_OTLP_FILE": "/tmp/x"})
    assert s == TracingSettings(1.0, "/tmp/x", None) and s.exporting
    assert not settings_from(None, env={}).exporting
    assert settings_from(None, env={}).sampling == 0.01
    with pytest.raises(ValueError, match="sampling"):
        settings_from({"sampling": 2}, env={})
    with pytest.raises(ValueError, match="otlp_http"):
        settings_from({"otlp_http": "127.0.0.1:4318"}, env={})
    with pytest.raises(ValueError, match="not supported"):
        settings_from({"rate": 1}, env={})


def test_batcher_writes_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    batcher = SpanBatcher([file_export(str(out))], (("service.name", "x"),), batch_size=3)
    tracer = Tracer(TracingSettings(1.0), sink=batcher.add)
    for _ in range(4):
        span = tracer.begin([], False, 1.0)
        assert span is not None
        tracer.end(span, end_wall=1.1, method="GET", authority="a", path="/", status=200,
                   reason="-", peer_identity=None)
    batcher.close()  # no loop running: each add flushed synchronously, close flushes the rest
    lines = out.read_text().splitlines()
    total = sum(len(json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"])
                for line in lines)
    assert total == 4 and batcher.exported == 4


def test_batcher_bounded_queue() -> None:
    batcher = SpanBatcher([lambda body: None], (), max_queue=2, batch_size=100)
    rec = SpanRecord(TID, SID, "", "n", 3, 1, 2, (), 0)
    batcher._queue = [rec, rec]  # full
    batcher.add(rec)
    assert batcher.dropped == 1


def test_disabled_without_exporter_and_install() -> None:
    assert not start_tracer(TracingSettings(1.0), ()).enabled
    before = tracing.TRACER
    try:
        t = tracing.install(Tracer(TracingSettings(1.0), sink=lambda s: None))
        assert tracing.TRACER is t and t.enabled
    finally:
        tracing.install(before)


def test_unsampled_traceparent_fast_path() -> None:
    ctx = parse_context([(b"traceparent", f"00-{TID}-{SID}-00".encode())])
    assert ctx is not None and ctx.sampled is False
    # garbage flags fall back to the full parse (and are treated as absent)
    assert parse_context([(b"traceparent", f"00-{TID}-{SID}-zz".encode())]) is None


def test_otlp_http_export_posts_to_v1_traces() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from hyphal.telemetry.otlp import http_export

    got: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append((self.path, self.headers["content-type"], body))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        batcher = SpanBatcher([http_export(url)], (("service.name", "x"),))
        tracer = Tracer(TracingSettings(1.0), sink=batcher.add)
        span = tracer.begin([(b"traceparent", TP)], True, 1.0)
        assert span is not None
        tracer.end(span, end_wall=1.2, method="GET", authority="a", path="/", status=200,
                   reason="-", peer_identity=None)
        batcher.close()
    finally:
        server.shutdown()
        server.server_close()
    assert len(got) == 1 and got[0][0] == "/v1/traces" and got[0][1] == "application/json"
    doc = json.loads(got[0][2])
    assert doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == TID
    failing = SpanBatcher([http_export("http://127.0.0.1:9")], ())
    failing.add(SpanRecord(TID, SID, "", "n", 3, 1, 2, (), 0))
    assert failing.failed == 1  # a collector that is down costs a warning, not a crash
