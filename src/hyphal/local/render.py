"""Plain-text tables for the CLI (`up` summary, `status`, `proxy-config`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hyphal.local.rundir import MeshState


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; `None` prints as '-'."""
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)


def ports_text(replica: dict[str, Any]) -> str:
    parts = [
        f"{p['name']}:{p['port']} app={p['app_port']} in={p['inbound_port']}"
        for p in replica.get("ports", [])
    ]
    parts.append(f"out={replica.get('outbound_http_port')}")
    parts.append(f"admin={replica.get('admin_port')}")
    return " ".join(parts)


def summary(state: MeshState) -> str:
    """The table `hyphal up` ends with: one row per workload replica."""
    rows = []
    for r in state.replicas:
        app = state.process(f"{r['key']}/app")
        side = state.process(f"{r['key']}/sidecar")
        rows.append([
            r["workload"], r["replica"],
            app.pid if app else None, side.pid if side else None,
            ports_text(r), r["identity"],
        ])
    control = state.process("control")
    head = (
        f"control plane: pid {control.pid if control else '-'}, api {state.api}, "
        f"xds {state.control.get('xds_port')}, ca {state.control.get('ca_port')}"
    )
    body = table(["WORKLOAD", "REPLICA", "APP PID", "SIDECAR PID", "PORTS", "IDENTITY"], rows)
    return f"{head}\n{body}"
