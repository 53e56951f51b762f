"""Istio-compatible request metrics and proxy gauges, rendered in Prometheus text format.

Per request the cost is a tuple key, one dict lookup, two list increments and a bisect;
text is built only on scrape (`render`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

# Istio's default buckets for istio_request_duration_milliseconds.
DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)

LABEL_NAMES: tuple[str, ...] = (
    "reporter", "source_workload", "source_workload_namespace", "source_principal",
    "destination_workload", "destination_workload_namespace", "destination_principal",
    "destination_service", "destination_cluster", "connection_security_policy",
)


@dataclass(frozen=True, slots=True, eq=False)
class PeerLabels:
    """The per-(listener, cluster) part of the label set, resolved once, reused per request.

    Compared by identity (hashing ten strings per request is measurable): get the canonical
    instance from `Stats.intern`."""

    reporter: str
    source_workload: str = "unknown"
    source_workload_namespace: str = "unknown"
    source_principal: str = "unknown"
    destination_workload: str = "unknown"
    destination_workload_namespace: str = "unknown"
    destination_principal: str = "unknown"
    destination_service: str = "unknown"
    destination_cluster: str = "unknown"
    connection_security_policy: str = "none"

    def values(self) -> tuple[str, ...]:
        return (self.reporter, self.source_workload, self.source_workload_namespace,
                self.source_principal, self.destination_workload,
                self.destination_workload_namespace, self.destination_principal,
                self.destination_service, self.destination_cluster,
                self.connection_security_policy)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


class Stats:
    """Counters and histograms of one sidecar."""

    __slots__ = ("_counters", "_gauges", "_interned", "_labeled", "_series")

    def __init__(self) -> None:
        # Per (labels, code, flags, grpc status): [count, sum of durations, bucket counts...,
        # +Inf count].
        self._series: dict[tuple[PeerLabels, int, str, str], list[Any]] = {}
        self._gauges: dict[tuple[str, str], int] = defaultdict(int)
        self._counters: dict[tuple[str, str], int] = defaultdict(int)
        self._interned: dict[tuple[str, ...], PeerLabels] = {}
        self._labeled: dict[tuple[str, tuple[tuple[str, str], ...]], int] = defaultdict(int)

    def intern(self, peer: PeerLabels) -> PeerLabels:
        """The one instance with these label values (so identity equality is value equality)."""
        return self._interned.setdefault(peer.values(), peer)

    def record_request(self, peer: PeerLabels, code: int, flags: str, duration_ms: float,
                       grpc_status: str = "") -> None:
        """`grpc_status`: Istio's grpc_response_status, the gRPC status code of a gRPC
        request ("" for others); its HTTP `code` stays what went on the wire (200)."""
        key = (peer, code, flags, grpc_status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0, 0.0] + [0] * (len(DURATION_BUCKETS_MS) + 1)
        series[0] += 1
        series[1] += duration_ms
        series[2 + bisect_left(DURATION_BUCKETS_MS, duration_ms)] += 1

    def gauge_add(self, name: str, cluster: str, delta: int) -> None:
        """e.g. `hyphal_upstream_cx_active` per cluster."""
        self._gauges[(name, cluster)] += delta

    def count(self, name: str, label: str = "", delta: int = 1) -> None:
        """A counter with at most one `cluster`/`listener` label (`label` "" = none)."""
        self._counters[(name, label)] += delta

    def count_labeled(self, name: str, labels: tuple[tuple[str, str], ...],
                      delta: int = 1) -> None:
        """A counter with several labels, e.g. `hyphal_upstream_rq_overflow_total`
        with (("cluster", ...), ("reason", ...))."""
        self._labeled[(name, labels)] += delta

    def labeled(self, name: str, labels: tuple[tuple[str, str], ...]) -> int:
        return self._labeled.get((name, labels), 0)

    def requests_total(self, code: int | None = None, reporter: str | None = None) -> int:
        return sum(v[0] for (peer, c, _, _), v in self._series.items()
                   if (code is None or c == code)
                   and (reporter is None or peer.reporter == reporter))

    def gauge(self, name: str, cluster: str) -> int:
        return self._gauges.get((name, cluster), 0)

    def counter(self, name: str, label: str = "") -> int:
        return self._counters.get((name, label), 0)

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        out: list[str] = [
            "# TYPE istio_requests_total counter",
        ]
        names = (*LABEL_NAMES, "response_code", "response_flags", "grpc_response_status")
        series = sorted(self._series.items(), key=_sort_key)
        for (peer, code, flags, grpc), values in series:
            text = _labels(names, (*peer.values(), str(code), flags, grpc))
            out.append(f"istio_requests_total{{{text}}} {values[0]}")
        out.append("# TYPE istio_request_duration_milliseconds histogram")
        for (peer, code, flags, grpc), values in series:
            base = _labels(names, (*peer.values(), str(code), flags, grpc))
            counts = values[2:]  # one per bound, then the +Inf bucket
            running = 0
            for bound, count in zip(DURATION_BUCKETS_MS, counts, strict=False):
                running += count
                out.append(f'istio_request_duration_milliseconds_bucket{{{base},le="{bound:g}"}}'
                           f' {running}')
            running += counts[-1]
            out.append(f'istio_request_duration_milliseconds_bucket{{{base},le="+Inf"}} {running}')
            out.append(f"istio_request_duration_milliseconds_sum{{{base}}} {values[1]:.3f}")
            out.append(f"istio_request_duration_milliseconds_count{{{base}}} {running}")
        seen: set[str] = set()
        for (name, cluster), value in sorted(self._gauges.items()):
            if name not in seen:
                out.append(f"# TYPE {name} gauge")
                seen.add(name)
            out.append(f'{name}{{cluster_name="{_escape(cluster)}"}} {value}')
        for (name, label), value in sorted(self._counters.items()):
            if name not in seen:
                out.append(f"# TYPE {name} counter")
                seen.add(name)
            suffix = f'{{name="{_escape(label)}"}}' if label else ""
            out.append(f"{name}{suffix} {value}")
        for (name, labels), value in sorted(self._labeled.items()):
            if name not in seen:
                out.append(f"# TYPE {name} counter")
                seen.add(name)
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            out.append(f"{name}{{{text}}} {value}")
        return "\n".join(out) + "\n"


def _sort_key(item: tuple[tuple[PeerLabels, int, str, str], object]
              ) -> tuple[tuple[str, ...], int, str, str]:
    (peer, code, flags, grpc), _ = item
    return (peer.values(), code, flags, grpc)
