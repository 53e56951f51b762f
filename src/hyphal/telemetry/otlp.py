"""OTLP/JSON span export: encoding, a bounded batcher on the event loop, file and HTTP sinks.

The encoding is the OpenTelemetry protocol's JSON mapping of `ExportTraceServiceRequest`
(resourceSpans → scopeSpans → spans; trace and span ids as hex strings, 64-bit times as
decimal strings, enums as numbers). Spans are queued by the request path (an append), and
a timer on the loop flushes them every `interval_s` or at `batch_size`: a file gets one
request per line (JSON lines, like the collector's file exporter); an HTTP collector gets
a POST to `/v1/traces` from a worker thread, so the loop never waits on the network. The
queue is bounded: past `max_queue` spans are dropped and counted, never buffered forever.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from hyphal.telemetry.tracing import SpanRecord, Tracer, TracingSettings

__all__ = ["SpanBatcher", "encode_request", "start_tracer"]

log = logging.getLogger("hyphal.telemetry.otlp")

SCOPE_NAME = "hyphal.proxy"


def _value(value: str | int | float | bool) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value}


def _attributes(pairs: Sequence[tuple[str, str | int]]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in pairs]


def encode_span(span: SpanRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
        "attributes": _attributes(span.attributes),
        "status": {"code": span.status_code},
    }
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id
    if span.status_message:
        out["status"]["message"] = span.status_message
    return out


def encode_request(spans: Sequence[SpanRecord],
                   resource: Sequence[tuple[str, str | int]]) -> dict[str, Any]:
    """An `ExportTraceServiceRequest` in OTLP/JSON."""
    return {
        "resourceSpans": [{
            "resource": {"attributes": _attributes(resource)},
            "scopeSpans": [{
                "scope": {"name": SCOPE_NAME},
                "spans": [encode_span(s) for s in spans],
            }],
        }],
    }


Export = Callable[[bytes], None]


def file_export(path: str) -> Export:
    """Append one JSON line per batch (O_APPEND: sidecars may share one file)."""

    def export(body: bytes) -> None:
        with open(path, "ab") as fh:
            fh.write(body + b"\n")

    return export


def http_export(base_url: str, timeout_s: float = 2.0) -> Export:
    """POST to `<base_url>/v1/traces` (an OTLP/HTTP collector, Jaeger's 4318 port)."""
    import urllib.request  # here: a sidecar exporting no spans over HTTP does not load it (~1 MB)

    url = base_url.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"

    def export(body: bytes) -> None:
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()

    return export


class SpanBatcher:
    """Collects finished spans and exports them in batches off the request path."""

    def __init__(self, exports: Sequence[Export], resource: Sequence[tuple[str, str | int]],
                 *, interval_s: float = 1.0, batch_size: int = 512, max_queue: int = 4096,
                 max_in_flight: int = 2) -> None:
        self._exports = tuple(exports)
        self._resource = tuple(resource)
        self._interval = interval_s
        self._batch_size = batch_size
        self._max_queue = max_queue
        self._queue: list[SpanRecord] = []
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = threading.BoundedSemaphore(max_in_flight)
        self.dropped = 0
        self.exported = 0
        self.failed = 0

    def add(self, span: SpanRecord) -> None:
        """Called per sampled request: an append, and a timer armed once per interval."""
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        self._queue.append(span)
        if len(self._queue) >= self._batch_size:
            self.flush(background=True)
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush(background=False)
                return
            self._timer = loop.call_later(self._interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush(background=True)

    def flush(self, background: bool = False) -> None:
        """Export what is queued; in a worker thread when `background` (busy: drop)."""
        if not self._queue:
            return
        spans, self._queue = self._queue, []
        body = json.dumps(encode_request(spans, self._resource),
                          separators=(",", ":")).encode()
        if not background:
            self._send(body, len(spans))
            return
        if not self._in_flight.acquire(blocking=False):
            self.dropped += len(spans)  # the collector is slower than we produce
            return

        def work() -> None:
            try:
                self._send(body, len(spans))
            finally:
                self._in_flight.release()

        threading.Thread(target=work, name="hyphal-otlp", daemon=True).start()

    def _send(self, body: bytes, count: int) -> None:
        for export in self._exports:
            try:
                export(body)
                self.exported += count
            except (OSError, ValueError) as exc:  # urllib's URLError is an OSError
                self.failed += count
                log.warning("span export failed (%d spans): %s", count, exc)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush(background=False)


def start_tracer(settings: TracingSettings,
                 resource: Sequence[tuple[str, str | int]]) -> Tracer:
    """A tracer for `settings`; with an exporter configured, its batcher is flushed at exit."""
    exports: list[Export] = []
    if settings.otlp_file:
        exports.append(file_export(settings.otlp_file))
    if settings.otlp_http:
        exports.append(http_export(settings.otlp_http))
    if not exports:
        return Tracer(settings)
    batcher = SpanBatcher(exports, resource)
    atexit.register(batcher.close)
    return Tracer(settings, sink=batcher.add)
