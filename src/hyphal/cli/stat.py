"""`hyphal stat` (golden metrics per workload or service) and `hyphal graph` (the service graph).

Both read the control plane's telemetry views (`/api/v1/stats`, `/api/v1/graph`), which
aggregate every sidecar's Istio metrics over a short window (control/telemetry.py). The
control plane is found as for `hyphal get`, or through `--run-dir` of a local mesh.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hyphal.cli.client import ApiClient, ApiTarget, ClientError, add_api_arguments, locate


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stat", help="success rate, requests/s and latency per workload or service")
    p.add_argument("kind", nargs="?", default="deploy", choices=("deploy", "svc"),
                   help="deploy: per workload, inbound (default); svc: per service, callers' view")
    p.add_argument("-n", "--namespace", default="", help="only this namespace")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_mesh_arguments(p)
    p.set_defaults(func=run_stat)
    g = sub.add_parser("graph", help="the service graph: who calls which service, how well")
    g.add_argument("-n", "--namespace", default="", help="only edges touching this namespace")
    g.add_argument("-o", "--output", choices=("dot", "json"), default="dot")
    add_mesh_arguments(g)
    g.set_defaults(func=run_graph)


def add_mesh_arguments(parser: argparse.ArgumentParser) -> None:
    add_api_arguments(parser)
    parser.add_argument("--run-dir", default=None,
                        help="a local mesh's run directory (finds its control plane)")


def client_for(args: argparse.Namespace) -> ApiClient:
    """The API of `--run-dir`'s mesh, else as `hyphal get` finds it; ClientError if none."""
    if args.run_dir and not args.api:
        from hyphal.local.rundir import RunDir

        try:
            state = RunDir(args.run_dir).require_state()
        except FileNotFoundError as exc:
            raise ClientError(str(exc)) from None
        token = None
        try:
            with open(f"{args.state_dir or state.state_dir}/admin-token", encoding="utf-8") as f:
                token = f.read().strip()
        except OSError:
            pass
        return ApiClient(ApiTarget(state.api.rstrip("/"), token, f"{args.run_dir}/mesh.json"))
    return ApiClient(locate(api=args.api, state_dir=args.state_dir))


def _pct(v: float | None) -> str | None:
    return None if v is None else f"{100.0 * v:.2f}%"


def _ms(v: float | None) -> str | None:
    if v is None:
        return None
    return f"{v:.0f}ms" if v >= 10 else f"{v:.1f}ms"


def stat_table(view: dict[str, Any]) -> str:
    """Linkerd's `viz stat` columns."""
    from hyphal.local.render import table

    rows = []
    for r in view["items"]:
        meshed = f"{r['meshed']}/{r['meshed']}" if "meshed" in r else "-"
        rows.append([r["name"] if view["kind"] == "deploy" else r["name"].split(".svc.")[0],
                     meshed, _pct(r["success_rate"]), f"{r['rps']:.1f}rps",
                     _ms(r["latency_ms_p50"]), _ms(r["latency_ms_p95"]),
                     _ms(r["latency_ms_p99"]), r["tcp_connections"]])
    head = ["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99",
            "TCP_CONN"]
    return table(head, rows)


def graph_dot(view: dict[str, Any]) -> str:
    """Graphviz DOT: workloads are boxes, services ellipses, edges carry rps/success/p99."""

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph mesh {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for n in view["nodes"]:
        shape = "box" if n["kind"] == "workload" else "ellipse"
        lines.append(f"  {q(n['name'])} [shape={shape}];")
    for e in view["edges"]:
        ok = _pct(e["success_rate"]) or "-"
        label = f"{e['rps']:.1f} rps\\n{ok} ok\\np99 {_ms(e['latency_ms_p99']) or '-'}"
        color = "red" if e["success_rate"] is not None and e["success_rate"] < 0.95 else "black"
        lines.append(f"  {q(e['from_namespace'] + '/' + e['from'])} -> {q(e['to'])} "
                     f"[label=\"{label}\", color={color}];")
    lines.append("}")
    return "\n".join(lines)


def _fetch(args: argparse.Namespace, path: str, params: dict[str, str]) -> Any:
    try:
        return client_for(args).get(path, params)
    except ClientError as exc:
        print(f"hyphal {args.command}: {exc}", file=sys.stderr)
        return None


def run_stat(args: argparse.Namespace) -> int:
    view = _fetch(args, "/api/v1/stats", {"namespace": args.namespace, "kind": args.kind})
    if view is None:
        return 1
    if args.output == "json":
        print(json.dumps(view, indent=2))
        return 0
    if not view["items"]:
        print("no workloads found (are sidecars connected, and announcing ADMIN_PORT?)")
    else:
        print(stat_table(view))
    for node, err in view.get("scrape_errors", {}).items():
        print(f"warning: {node}: stats not readable: {err}", file=sys.stderr)
    return 0


def run_graph(args: argparse.Namespace) -> int:
    view = _fetch(args, "/api/v1/graph", {"namespace": args.namespace})
    if view is None:
        return 1
    print(json.dumps(view, indent=2) if args.output == "json" else graph_dot(view))
    return 0
