"""Prometheus text format (0.0.4), both ways, and quantiles from cumulative histogram buckets.

Pure: the control plane's telemetry aggregation parses what sidecars expose on
`/stats/prometheus`, and re-renders it (with a label naming the proxy) for federation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Sample", "family_of", "histogram_quantile", "parse", "render"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One series value: `name{labels} value`."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str, default: str = "") -> str:
        for k, v in self.labels:
            if k == key:
                return v
        return default


class ParseError(ValueError):
    """A line of exposition text that cannot be read; the message quotes it."""


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _labels(body: str, line: str) -> tuple[tuple[str, str], ...]:
    labels: list[tuple[str, str]] = []
    i = 0
    n = len(body)
    while i < n:
        while i < n and body[i] in ", ":
            i += 1
        if i >= n:
            break
        eq = body.find("=", i)
        if eq < 0 or eq + 1 >= n or body[eq + 1] != '"':
            raise ParseError(f"bad label set in {line!r}")
        key = body[i:eq].strip()
        j = eq + 2
        while j < n and body[j] != '"':
            j += 2 if body[j] == "\\" else 1
        if j >= n:
            raise ParseError(f"unterminated label value in {line!r}")
        labels.append((key, _unescape(body[eq + 2:j])))
        i = j + 1
    return tuple(labels)


def parse(text: str) -> tuple[list[Sample], dict[str, str]]:
    """(samples, {family name: type}) from exposition text; timestamps are ignored."""
    samples: list[Sample] = []
    types: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3]
            continue
        brace = line.find("{")
        if brace >= 0:
            close = line.rfind("}")
            if close < brace:
                raise ParseError(f"unbalanced braces in {raw!r}")
            name = line[:brace]
            labels = _labels(line[brace + 1:close], raw)
            rest = line[close + 1:].split()
        else:
            parts = line.split()
            name, labels, rest = parts[0], (), parts[1:]
        if not rest:
            raise ParseError(f"no value in {raw!r}")
        try:
            value = float(rest[0])
        except ValueError:
            raise ParseError(f"bad value {rest[0]!r} in {raw!r}") from None
        samples.append(Sample(name, labels, value))
    return samples, types


def family_of(name: str, types: Mapping[str, str]) -> str:
    """The metric family a series belongs to (`x_bucket` → `x` for a histogram `x`)."""
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return name[: -len(suffix)]
    return name


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(samples: Iterable[Sample], types: Mapping[str, str]) -> str:
    """Exposition text with one `# TYPE` line per family, series grouped by family."""
    by_family: dict[str, list[Sample]] = {}
    for s in samples:
        by_family.setdefault(family_of(s.name, types), []).append(s)
    out: list[str] = []
    for family in sorted(by_family):
        if family in types:
            out.append(f"# TYPE {family} {types[family]}")
        for s in by_family[family]:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels)
            series = f"{s.name}{{{text}}}" if text else s.name
            out.append(f"{series} {_fmt(s.value)}")
    return "\n".join(out) + ("\n" if out else "")


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' `histogram_quantile`: `buckets` are (upper bound, cumulative count) with
    +Inf last. Linear interpolation inside the bucket; a rank in the +Inf bucket answers the
    highest finite bound. None when there are no observations."""
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower
