"""Golden metrics and the service graph: scrape every sidecar's stats, keep a window, aggregate.

Theory of operation: every `interval_s` the aggregator asks for the connected sidecars (node
metadata `ADMIN_PORT`, `INSTANCE_IP`), GETs each one's `/stats/prometheus` (bounded
concurrency, a timeout each), parses it and keeps the scrapes of the last `window_s` per
sidecar. A view compares each sidecar's newest scrape with its oldest one in the window (or
with zero at connect time when it has only one), so counters become rates; a counter that
went down means the sidecar restarted, and its new value is the delta. Views:

- `stats(namespace, kind)`: per workload (`deploy`, the inbound view: reporter=destination)
  or per service (`svc`, the callers' view: reporter=source): success rate (non-5xx),
  requests/s, p50/p95/p99 from the duration histogram, share of mTLS requests, sidecars;
- `graph(namespace)`: edges source workload → destination service with rps, success, p99;
- `federate()`: every sidecar's latest series with a `proxy` label, for one Prometheus target.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hyphal.telemetry import promtext
from hyphal.telemetry.promtext import Sample

__all__ = ["ScrapeTarget", "TelemetryAggregator", "fetch_stats", "targets_from_connections"]

log = logging.getLogger("hyphal.control.telemetry")

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"
CX_ACTIVE = "hyphal_upstream_cx_active"


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One connected sidecar's admin endpoint."""

    node_id: str
    workload: str
    namespace: str
    host: str
    admin_port: int
    since: float  # when its ADS stream connected (time.time())


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """The labels of a request series that the views group by."""

    reporter: str
    source_workload: str
    source_namespace: str
    destination_workload: str
    destination_namespace: str
    destination_service: str
    code: int
    mtls: bool


@dataclass(frozen=True, slots=True)
class Scrape:
    at: float
    requests: Mapping[SeriesKey, float]
    buckets: Mapping[SeriesKey, Mapping[float, float]]  # le -> cumulative count
    cx_active: Mapping[str, float]  # cluster -> open upstream connections
    samples: tuple[Sample, ...]
    types: Mapping[str, str]


_EMPTY = Scrape(0.0, {}, {}, {}, (), {})


def _key(s: Sample) -> SeriesKey:
    code = s.label("response_code", "0")
    return SeriesKey(
        reporter=s.label("reporter"),
        source_workload=s.label("source_workload", "unknown"),
        source_namespace=s.label("source_workload_namespace", "unknown"),
        destination_workload=s.label("destination_workload", "unknown"),
        destination_namespace=s.label("destination_workload_namespace", "unknown"),
        destination_service=s.label("destination_service", "unknown"),
        code=int(code) if code.isdigit() else 0,
        mtls=s.label("connection_security_policy") == "mutual_tls",
    )


def to_scrape(text: str, at: float) -> Scrape:
    samples, types = promtext.parse(text)
    requests: dict[SeriesKey, float] = {}
    buckets: dict[SeriesKey, dict[float, float]] = {}
    cx: dict[str, float] = {}
    for s in samples:
        if s.name == REQUESTS:
            k = _key(s)
            requests[k] = requests.get(k, 0.0) + s.value
        elif s.name == DURATION + "_bucket":
            k = _key(s)
            le = float(s.label("le", "+Inf"))
            per = buckets.setdefault(k, {})
            per[le] = per.get(le, 0.0) + s.value
        elif s.name == CX_ACTIVE:
            cluster = s.label("cluster_name")
            cx[cluster] = cx.get(cluster, 0.0) + s.value
    return Scrape(at, requests, buckets, cx, tuple(samples), types)


def _delta(new: float, old: float) -> float:
    return new - old if new >= old else new  # a restart resets counters


@dataclass(slots=True)
class _Totals:
    """Sums over a window for one row of a view."""

    requests: float = 0.0
    success: float = 0.0
    mtls: float = 0.0
    rate: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    def add(self, key: SeriesKey, count: float, elapsed: float,
            buckets: Mapping[float, float]) -> None:
        self.requests += count
        if 0 < key.code < 500:
            self.success += count
        if key.mtls:
            self.mtls += count
        self.rate += count / elapsed if elapsed > 0 else 0.0
        for le, c in buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + c

    def row(self) -> dict[str, Any]:
        hist = list(self.buckets.items())

        def q(x: float) -> float | None:
            v = promtext.histogram_quantile(x, hist)
            return None if v is None else round(v, 3)

        has = self.requests > 0
        return {
            "requests": round(self.requests),
            "success_rate": round(self.success / self.requests, 4) if has else None,
            "rps": round(self.rate, 3),
            "latency_ms_p50": q(0.5) if has else None,
            "latency_ms_p95": q(0.95) if has else None,
            "latency_ms_p99": q(0.99) if has else None,
            "tls_percent": round(100.0 * self.mtls / self.requests, 1) if has else None,
        }


Fetch = Callable[[ScrapeTarget, float], Awaitable[str]]


async def fetch_stats(target: ScrapeTarget, timeout_s: float) -> str:
    """GET /stats/prometheus from a sidecar's admin port (one request per connection)."""

    async def get() -> str:
        reader, writer = await asyncio.open_connection(target.host, target.admin_port)
        try:
            writer.write(b"GET /stats/prometheus HTTP/1.1\r\nHost: admin\r\n"
                         b"Connection: close\r\n\r\n")
            data = await reader.read(-1)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b"?"
        if status != b"200":
            raise OSError(f"admin answered {status.decode('latin-1')}")
        return body.decode("utf-8", "replace")

    return await asyncio.wait_for(get(), timeout_s)


def targets_from_connections(connections: Iterable[Any]) -> list[ScrapeTarget]:
    """Sidecars among ADS connections (`ConnectionInfo`) that announce an `ADMIN_PORT`."""
    out: list[ScrapeTarget] = []
    for conn in connections:
        node = conn.node
        md = node.metadata or {}
        port = md.get("ADMIN_PORT")
        if md.get("PROXY_MODE") != "sidecar" or not port:
            continue
        out.append(ScrapeTarget(
            node_id=node.id, workload=str(md.get("WORKLOAD_NAME") or node.cluster),
            namespace=str(md.get("NAMESPACE") or node.namespace or "default"),
            host=str(md.get("INSTANCE_IP") or "127.0.0.1"), admin_port=int(port),
            since=float(conn.connected_since)))
    return out


class TelemetryAggregator:
    """Scrapes sidecars on a timer and answers the stats, graph and federation views."""

    def __init__(self, targets: Callable[[], list[ScrapeTarget]], *, interval_s: float = 2.0,
                 window_s: float = 30.0, timeout_s: float = 1.0, concurrency: int = 16,
                 fetch: Fetch = fetch_stats, clock: Callable[[], float] = time.time) -> None:
        self._targets = targets
        self.interval_s = interval_s
        self.window_s = window_s
        self.timeout_s = timeout_s
        self._fetch = fetch
        self._clock = clock
        self._limit = asyncio.Semaphore(concurrency)
        self._known: dict[str, ScrapeTarget] = {}
        self._scrapes: dict[str, deque[Scrape]] = {}
        self.errors: dict[str, str] = {}  # node id -> last scrape error
        self.scrapes = 0

    async def run(self) -> None:
        """Scrape forever (cancel to stop); one failing sidecar never stops the others."""
        while True:
            started = time.monotonic()
            try:
                await self.scrape_once()
            except Exception:
                log.exception("telemetry scrape failed")
            await asyncio.sleep(max(self.interval_s - (time.monotonic() - started), 0.05))

    async def scrape_once(self) -> None:
        targets = {t.node_id: t for t in self._targets()}
        for gone in set(self._known) - set(targets):
            self._known.pop(gone, None)
            self._scrapes.pop(gone, None)
            self.errors.pop(gone, None)
        for node_id, t in targets.items():
            old = self._known.get(node_id)
            if old is not None and (old.since, old.admin_port) != (t.since, t.admin_port):
                self._scrapes.pop(node_id, None)  # a new process behind the same node id
        self._known = targets
        await asyncio.gather(*(self._scrape(t) for t in targets.values()))
        self.scrapes += 1

    async def _scrape(self, target: ScrapeTarget) -> None:
        async with self._limit:
            try:
                text = await self._fetch(target, self.timeout_s)
                scrape = to_scrape(text, self._clock())
            except (OSError, TimeoutError, ValueError) as exc:
                self.errors[target.node_id] = f"{type(exc).__name__}: {exc}"
                return
        self.errors.pop(target.node_id, None)
        window = self._scrapes.setdefault(target.node_id, deque())
        window.append(scrape)
        while len(window) > 2 and window[1].at < scrape.at - self.window_s:
            window.popleft()

    # ---- views -------------------------------------------------------------------------------

    def _deltas(self) -> Iterable[tuple[ScrapeTarget, Scrape, SeriesKey, float, float,
                                        dict[float, float]]]:
        """(target, newest, key, count in window, seconds, bucket deltas) per series."""
        for node_id, window in self._scrapes.items():
            target = self._known.get(node_id)
            if target is None or not window:
                continue
            new = window[-1]
            old = window[0] if len(window) > 1 else Scrape(
                min(target.since, new.at), {}, {}, {}, (), {})
            elapsed = max(new.at - old.at, 1e-3)
            for key, value in new.requests.items():
                count = _delta(value, old.requests.get(key, 0.0))
                old_b = old.buckets.get(key, {})
                buckets = {le: _delta(c, old_b.get(le, 0.0))
                           for le, c in new.buckets.get(key, {}).items()}
                yield target, new, key, count, elapsed, buckets

    def stats(self, namespace: str | None = None, kind: str = "deploy") -> dict[str, Any]:
        """Rows per workload (`deploy`) or per destination service (`svc`)."""
        if kind not in ("deploy", "svc"):
            raise ValueError(f"kind {kind!r}: use deploy or svc")
        rows: dict[tuple[str, str], _Totals] = {}
        meshed: dict[tuple[str, str], int] = {}
        tcp: dict[tuple[str, str], float] = {}
        for node_id, t in self._known.items():
            if kind == "deploy" and (namespace is None or t.namespace == namespace):
                key = (t.namespace, t.workload)
                rows.setdefault(key, _Totals())
                meshed[key] = meshed.get(key, 0) + 1
                window = self._scrapes.get(node_id)
                if window:
                    tcp[key] = tcp.get(key, 0.0) + sum(window[-1].cx_active.values())
        for _t, _new, series, count, elapsed, buckets in self._deltas():
            if kind == "deploy":
                if series.reporter != "destination":
                    continue
                row = (series.destination_namespace, series.destination_workload)
            else:
                if series.reporter != "source":
                    continue
                svc = series.destination_service
                row = (_service_namespace(svc), svc)
            if namespace is not None and row[0] != namespace:
                continue
            rows.setdefault(row, _Totals()).add(series, count, elapsed, buckets)
        if kind == "svc":
            for window in self._scrapes.values():
                if not window:
                    continue
                for cluster, value in window[-1].cx_active.items():
                    svc = cluster.rsplit("|", 1)[-1] if cluster.startswith("outbound|") else ""
                    if svc:
                        k = (_service_namespace(svc), svc)
                        if k in rows:
                            tcp[k] = tcp.get(k, 0.0) + value
        out = []
        for (ns, name), totals in sorted(rows.items()):
            entry = {"namespace": ns, "name": name, **totals.row(),
                     "tcp_connections": int(tcp.get((ns, name), 0))}
            if kind == "deploy":
                entry["meshed"] = meshed.get((ns, name), 0)
            out.append(entry)
        return {"kind": kind, "window_s": self.window_s, "items": out,
                "scrape_errors": dict(sorted(self.errors.items()))}

    def graph(self, namespace: str | None = None) -> dict[str, Any]:
        """Edges source workload → destination service, from the callers' sidecars."""
        edges: dict[tuple[str, str, str], _Totals] = {}
        for _t, _new, key, count, elapsed, buckets in self._deltas():
            if key.reporter != "source":
                continue
            if namespace is not None and namespace not in (
                    key.source_namespace, _service_namespace(key.destination_service)):
                continue
            e = (key.source_namespace, key.source_workload, key.destination_service)
            edges.setdefault(e, _Totals()).add(key, count, elapsed, buckets)
        nodes: set[tuple[str, str]] = set()
        out = []
        for (ns, src, dst), totals in sorted(edges.items()):
            row = totals.row()
            nodes.add(("workload", f"{ns}/{src}"))
            nodes.add(("service", dst))
            out.append({"from": src, "from_namespace": ns, "to": dst,
                        "to_name": dst.split(".", 1)[0], "requests": row["requests"],
                        "rps": row["rps"], "success_rate": row["success_rate"],
                        "latency_ms_p99": row["latency_ms_p99"],
                        "tls_percent": row["tls_percent"]})
        return {"window_s": self.window_s, "edges": out,
                "nodes": [{"kind": k, "name": n} for k, n in sorted(nodes)]}

    def federate(self) -> str:
        """Every sidecar's latest series with `proxy="<node id>"`, one TYPE line per family."""
        samples: list[Sample] = []
        types: dict[str, str] = {}
        for node_id, window in sorted(self._scrapes.items()):
            if not window:
                continue
            latest = window[-1]
            types.update(latest.types)
            samples.extend(Sample(s.name, (*s.labels, ("proxy", node_id)), s.value)
                           for s in latest.samples)
        samples.append(Sample("hyphal_telemetry_scrape_targets", (), float(len(self._known))))
        samples.append(Sample("hyphal_telemetry_scrape_errors", (), float(len(self.errors))))
        types.setdefault("hyphal_telemetry_scrape_targets", "gauge")
        types.setdefault("hyphal_telemetry_scrape_errors", "gauge")
        return promtext.render(samples, types)


def _service_namespace(fqdn: str) -> str:
    """`product.shop.svc.cluster.local` → `shop`; other hosts have no namespace ("")."""
    parts = fqdn.split(".")
    return parts[1] if len(parts) >= 3 and parts[2] == "svc" else ""
