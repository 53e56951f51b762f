"""Trace propagation and spans: W3C Trace Context (and B3 in), sampling, one span per hop.

Theory of operation. The sidecar's HTTP exchange asks the process tracer for a span at the
start of each request (`Tracer.begin`). The tracer reads the incoming context in one pass over
the headers: `traceparent` first, else B3 single (`b3`) or multi (`x-b3-*`). An incoming
sampling decision is honoured; without one the tracer decides (`sampling`, default 1%). An
unsampled request costs that header pass and a flag check; nothing is added to it. A sampled
request gets a span (CLIENT on the outbound side, SERVER on the inbound side) that is the
child of the incoming span, and the upstream request carries a `traceparent` (plus the B3
style it came with) naming the new span as parent. `Tracer.end` turns the finished exchange
into a frozen `SpanRecord` and hands it to the batcher (telemetry/otlp.py), which exports
OTLP/JSON in the background.

This module is sans-I/O: parsing, ids, decisions and records only.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Headers = list[tuple[bytes, bytes]]

__all__ = [
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_SERVER",
    "ActiveSpan",
    "SpanRecord",
    "TraceContext",
    "Tracer",
    "TracingSettings",
    "current",
    "format_traceparent",
    "install",
    "parse_b3_single",
    "parse_context",
    "parse_traceparent",
    "settings_from",
]

SPAN_KIND_SERVER = 2  # OTLP SpanKind values
SPAN_KIND_CLIENT = 3
STATUS_UNSET = 0
STATUS_ERROR = 2

W3C = "w3c"
B3_SINGLE = "b3"
B3_MULTI = "b3multi"

_TRACE_HEADERS = frozenset({
    b"traceparent", b"b3", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid",
    b"x-b3-sampled", b"x-b3-flags",
})
_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """The bootstrap's `tracing` block: `sampling` in [0, 1], where spans go (none: off)."""

    sampling: float = 0.01
    otlp_file: str | None = None
    otlp_http: str | None = None

    @property
    def exporting(self) -> bool:
        return bool(self.otlp_file or self.otlp_http)


def settings_from(block: Mapping[str, Any] | None, env: Mapping[str, str] | None = None,
                  source: str = "tracing") -> TracingSettings:
    """The bootstrap block overridden by `HYPHAL_TRACE_SAMPLING`, `HYPHAL_TRACE_OTLP_FILE`,
    `HYPHAL_TRACE_OTLP_HTTP`; raises ValueError naming the bad field."""
    env = os.environ if env is None else env
    block = dict(block or {})
    unknown = set(block) - {"sampling", "otlp_file", "otlp_http"}
    if unknown:
        raise ValueError(f"{source}: {', '.join(sorted(unknown))}: not supported "
                         "(use sampling, otlp_file, otlp_http)")
    raw_sampling: Any = env.get("HYPHAL_TRACE_SAMPLING", block.get("sampling", 0.01))
    try:
        sampling = float(raw_sampling)
    except (TypeError, ValueError):
        raise ValueError(f"{source}.sampling: {raw_sampling!r} is not a number in [0, 1]") from None
    if not 0.0 <= sampling <= 1.0:
        raise ValueError(f"{source}.sampling: {sampling} is not in [0, 1] (0.01 is 1%)")
    otlp_file = env.get("HYPHAL_TRACE_OTLP_FILE", block.get("otlp_file")) or None
    otlp_http = env.get("HYPHAL_TRACE_OTLP_HTTP", block.get("otlp_http")) or None
    if otlp_http is not None and not str(otlp_http).startswith(("http://", "https://")):
        raise ValueError(f"{source}.otlp_http: {otlp_http!r} must be a URL like "
                         "http://127.0.0.1:4318 (the collector's OTLP/HTTP port)")
    return TracingSettings(sampling, otlp_file and str(otlp_file), otlp_http and str(otlp_http))


# --- parsing and formatting ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceContext:
    """An incoming span context. `sampled` None: the caller deferred the decision (B3)."""

    trace_id: str  # 32 lower-case hex
    span_id: str  # 16 lower-case hex; "" when only a sampling flag came (b3: 1)
    sampled: bool | None
    style: str = W3C


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and set(text) <= _HEX


_TRACEPARENT = re.compile(
    rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\r\n]*)?")
_NOT_SAMPLED = TraceContext("", "", False, W3C)


def parse_traceparent(value: bytes) -> TraceContext | None:
    """W3C `traceparent`: `00-<trace-id>-<parent-id>-<flags>`; None when invalid."""
    m = _TRACEPARENT.fullmatch(value.strip().lower())
    if m is None:
        return None
    version, trace, span, flags, rest = m.groups()
    if version == b"ff" or (version == b"00" and rest):
        return None
    trace_id, span_id = trace.decode(), span.decode()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1), W3C)


def _quick_not_sampled(value: bytes) -> bool:
    """A version-00 traceparent whose sampled flag is off: the common case at 1% sampling,
    answered without validating the ids (nothing is recorded or changed for it)."""
    return len(value) == 55 and value[52] == 45 and not int(value[53:55], 16) & 1


def _b3_sampled(flag: str) -> bool | None:
    if flag in ("1", "d", "true"):
        return True
    if flag in ("0", "false"):
        return False
    return None


def parse_b3_single(value: bytes) -> TraceContext | None:
    """B3 single header: `{trace}-{span}[-{sampled}[-{parent}]]` or just `{sampled}`."""
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    parts = text.split("-")
    if len(parts) == 1:
        sampled = _b3_sampled(parts[0])
        return None if sampled is None else TraceContext("", "", sampled, B3_SINGLE)
    if len(parts) > 4:
        return None
    trace_id, span_id = parts[0], parts[1]
    if len(trace_id) == 16:
        trace_id = "0" * 16 + trace_id  # 64-bit ids are left-padded to 128 bits
    if not _is_hex(trace_id, 32) or not _is_hex(span_id, 16):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    sampled = _b3_sampled(parts[2]) if len(parts) > 2 else None
    if len(parts) > 2 and sampled is None:
        return None
    return TraceContext(trace_id, span_id, sampled, B3_SINGLE)


def _parse_b3_multi(found: Mapping[bytes, bytes]) -> TraceContext | None:
    sampled: bool | None = None
    if found.get(b"x-b3-flags", b"").strip() == b"1":
        sampled = True
    elif b"x-b3-sampled" in found:
        sampled = _b3_sampled(found[b"x-b3-sampled"].decode("latin-1").strip().lower())
    trace_raw = found.get(b"x-b3-traceid")
    span_raw = found.get(b"x-b3-spanid")
    if trace_raw is None or span_raw is None:
        return None if sampled is None else TraceContext("", "", sampled, B3_MULTI)
    value = trace_raw.strip() + b"-" + span_raw.strip()
    ctx = parse_b3_single(value)
    if ctx is None:
        return None
    return TraceContext(ctx.trace_id, ctx.span_id, sampled, B3_MULTI)


def parse_context(headers: Headers) -> TraceContext | None:
    """The incoming context, in one pass: traceparent, else b3, else x-b3-*; None if absent
    or invalid (an invalid header is treated as absent, as the W3C spec asks)."""
    b3: bytes | None = None
    multi: dict[bytes, bytes] | None = None
    for name, value in headers:
        size = len(name)
        if size == 11 and name.lower() == b"traceparent":
            try:
                if _quick_not_sampled(value):
                    return _NOT_SAMPLED
            except ValueError:
                pass
            ctx = parse_traceparent(value)
            if ctx is not None:
                return ctx
        elif size == 2 and name.lower() == b"b3":
            b3 = value
        elif size >= 10 and name[:5].lower() == b"x-b3-":
            if multi is None:
                multi = {}
            multi[name.lower()] = value
    if b3 is not None:
        return parse_b3_single(b3)
    if multi is not None:
        return _parse_b3_multi(multi)
    return None


def format_traceparent(trace_id: str, span_id: str, sampled: bool) -> bytes:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode()


def inject(headers: Headers, trace_id: str, span_id: str, style: str) -> Headers:
    """`headers` without any trace header, plus `traceparent` for (trace, span), and the B3
    header(s) in the style the request came with (so B3-only apps keep working)."""
    out = [(n, v) for n, v in headers if n.lower() not in _TRACE_HEADERS]
    out.append((b"traceparent", format_traceparent(trace_id, span_id, True)))
    if style == B3_SINGLE:
        out.append((b"b3", f"{trace_id}-{span_id}-1".encode()))
    elif style == B3_MULTI:
        out.extend([(b"x-b3-traceid", trace_id.encode()), (b"x-b3-spanid", span_id.encode()),
                    (b"x-b3-sampled", b"1")])
    return out


# --- spans -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One finished span, ready for an exporter."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: tuple[tuple[str, str | int], ...]
    status_code: int
    status_message: str = ""


@dataclass(slots=True)
class ActiveSpan:
    """A sampled request's span while the exchange runs (not shared between tasks)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    style: str = W3C

    def inject(self, headers: Headers) -> Headers:
        return inject(headers, self.trace_id, self.span_id, self.style)


Sink = Callable[[SpanRecord], None]


@dataclass(slots=True)
class Tracer:
    """Sampling decisions and span records for one sidecar process. `sink` receives every
    finished span (the OTLP batcher); `enabled` is False when nothing exports spans."""

    settings: TracingSettings = field(default_factory=TracingSettings)
    sink: Sink | None = None
    rng: random.Random = field(default_factory=random.Random)
    enabled: bool = False
    started: int = 0  # spans begun (sampled requests)

    def __post_init__(self) -> None:
        self.enabled = self.sink is not None

    def _id(self, bits: int) -> str:
        value = self.rng.getrandbits(bits)
        while not value:
            value = self.rng.getrandbits(bits)
        return f"{value:0{bits // 4}x}"

    def begin(self, headers: Headers, inbound: bool, start_wall: float) -> ActiveSpan | None:
        """A span for this request when it is sampled, else None (nothing to do)."""
        ctx = parse_context(headers)
        sampled = ctx.sampled if ctx is not None else None
        if sampled is None:
            sampled = self.rng.random() < self.settings.sampling
        if not sampled:
            return None
        self.started += 1
        if ctx is not None and ctx.trace_id:
            trace_id, parent, style = ctx.trace_id, ctx.span_id, ctx.style
        else:
            trace_id, parent = self._id(128), ""
            style = ctx.style if ctx is not None else W3C
        return ActiveSpan(trace_id, self._id(64), parent,
                          SPAN_KIND_SERVER if inbound else SPAN_KIND_CLIENT,
                          int(start_wall * 1e9), style)

    def end(self, span: ActiveSpan, *, end_wall: float, method: str, authority: str,
            path: str, status: int, reason: str, peer_identity: str | None,
            attributes: tuple[tuple[str, str | int], ...] = ()) -> SpanRecord:
        """Close the span with what the exchange saw and hand it to the sink."""
        host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
        attrs: list[tuple[str, str | int]] = [
            ("http.request.method", method),
            ("url.path", path.split("?", 1)[0] or "/"),
            ("server.address", host),
            ("http.response.status_code", status),
            ("hyphal.reason", reason),
        ]
        if peer_identity:
            attrs.append(("hyphal.peer.identity", peer_identity))
        attrs.extend(attributes)
        error = status == 0 or status >= 500 or (span.kind == SPAN_KIND_CLIENT and status >= 400)
        record = SpanRecord(
            trace_id=span.trace_id, span_id=span.span_id, parent_span_id=span.parent_span_id,
            name=f"{method} {authority or host}", kind=span.kind, start_ns=span.start_ns,
            end_ns=max(int(end_wall * 1e9), span.start_ns), attributes=tuple(attrs),
            status_code=STATUS_ERROR if error else STATUS_UNSET,
            status_message=reason if error and reason != "-" else "",
        )
        if self.sink is not None:
            self.sink(record)
        return record


TRACER = Tracer()
"""The process tracer, read per request as `tracing.TRACER` (disabled until `install`)."""


def current() -> Tracer:
    return TRACER


def install(tracer: Tracer) -> Tracer:
    """Make `tracer` the process tracer (as OpenTelemetry's global provider); returns it."""
    global TRACER
    TRACER = tracer
    return tracer
