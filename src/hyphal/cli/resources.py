"""`hyphal apply`, `hyphal delete` and `hyphal get`: change and read the control plane's config."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hyphal.cli.client import ApiClient, ClientError, add_api_arguments, locate
from hyphal.control.store import kinds
from hyphal.control.store.watch import config_files

Row = list[str]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("apply", help="create or update resources from files")
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR",
                   help="a YAML file or a directory of them (repeatable; '-' reads stdin)")
    add_api_arguments(p)
    p.set_defaults(func=run_apply)

    p = sub.add_parser("delete", help="delete resources applied through the API")
    p.add_argument("kind", nargs="?", help="resource kind (vs, dr, se, ap, pa, svc, workload, ...)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-f", "--filename", action="append", metavar="FILE|DIR",
                   help="delete the resources named in these files")
    p.add_argument("-n", "--namespace", default="default")
    add_api_arguments(p)
    p.set_defaults(func=run_delete)

    p = sub.add_parser("get", help="list resources")
    p.add_argument("kind", help="resource kind (vs, dr, se, ap, pa, svc, workload, ...)")
    p.add_argument("name", nargs="?")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", default=None)
    scope.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json", "name"), default="table")
    add_api_arguments(p)
    p.set_defaults(func=run_get)


# ---- helpers ----


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(locate(api=args.api, state_dir=args.state_dir))


def _read_inputs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """(name, text) for each file named or found under each directory named."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        if spec == "-":
            out.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(spec)
        if path.is_dir():
            files = config_files(path)
            if not files:
                raise ClientError(f"{path}: no .yaml/.yml/.json files in this directory")
        elif path.is_file():
            files = [path]
        else:
            raise ClientError(f"{path}: no such file or directory")
        for f in files:
            out.append((str(f), f.read_text(encoding="utf-8")))
    return out


def _validate_locally(inputs: list[tuple[str, str]]) -> list[str]:
    """Schema errors (`file#doc: path: reason`) found without asking the control plane."""
    from hyphal.control.store import adapter  # pydantic models: paid only by apply

    errors: list[str] = []
    for name, text in inputs:
        try:
            adapter.parse_text(text, name)
        except adapter.ParseFailed as exc:
            errors.extend(exc.errors)
    return errors


def _outcome_line(o: dict[str, Any]) -> str:
    info = kinds.lookup(o["kind"])
    group = kinds.group_of(o["kind"], o.get("apiVersion"))
    if group:
        resource = f"{o['kind'].lower()}.{group}"
    else:
        resource = info.kind.lower() if info else str(o["kind"])
    line = f"{resource}/{o['name']} {o['action']}"
    if o.get("namespace") not in (None, "", "default"):
        line = f"{resource}/{o['name']} {o['action']} (namespace {o['namespace']})"
    if o.get("note"):
        line += f" ({o['note']})"
    return line


def _print_errors(errors: Sequence[str]) -> None:
    for e in errors:
        print(f"error: {e}", file=sys.stderr)


# ---- apply / delete ----


def run_apply(args: argparse.Namespace) -> int:
    try:
        inputs = _read_inputs(args.filename)
        errors = _validate_locally(inputs)
        if errors:
            _print_errors(errors)
            print("nothing was applied", file=sys.stderr)
            return 1
        files = [{"name": name, "text": text} for name, text in inputs]
        result = _client(args).post_json("/api/v1/apply", {"files": files})
    except ClientError as exc:
        _print_errors(getattr(exc, "errors", None) or [str(exc)])
        if getattr(exc, "status", 0) in (400, 409, 422):
            print("nothing was applied", file=sys.stderr)
        return 1
    for o in result.get("results", []):
        print(_outcome_line(o))
    return 0


def run_delete(args: argparse.Namespace) -> int:
    try:
        if args.filename:
            if args.kind:
                return _fail("give either -f FILE or KIND NAME, not both")
            inputs = _read_inputs(args.filename)
            body = "\n---\n".join(text for _, text in inputs).encode("utf-8")
            result = _client(args).post("/api/v1/delete", body, "application/yaml")
        else:
            if not args.kind or not args.names:
                return _fail("say what to delete: `hyphal delete KIND NAME [-n NS]` or "
                             "`hyphal delete -f FILE`")
            try:
                kind = kinds.resolve(args.kind)
            except ValueError as exc:
                return _fail(str(exc))
            refs = [{"kind": kind, "name": n, "namespace": args.namespace} for n in args.names]
            result = _client(args).post_json("/api/v1/delete", {"resources": refs})
    except ClientError as exc:
        _print_errors(getattr(exc, "errors", None) or [str(exc)])
        if getattr(exc, "status", 0) in (400, 404, 409, 422):
            print("nothing was deleted", file=sys.stderr)
        return 1
    for o in result.get("results", []):
        print(_outcome_line(o))
    return 0


# ---- get ----


def _hosts(spec: dict[str, Any]) -> str:
    return ",".join(str(h) for h in spec.get("hosts") or []) or "*"


def _ports(items: Any) -> str:
    out = []
    for p in items or []:
        if isinstance(p, dict):
            num = p.get("number", p.get("port", ""))
            proto = p.get("protocol")
            out.append(f"{num}/{proto}" if proto else str(num))
    return ",".join(out)


def _labels(d: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in (d or {}).items()) if isinstance(d, dict) else ""


def _vs(spec: dict[str, Any]) -> Row:
    return [_hosts(spec), ",".join(spec.get("gateways") or []) or "mesh",
            str(len(spec.get("http") or []) + len(spec.get("tcp") or []))]


def _dr(spec: dict[str, Any]) -> Row:
    subsets = ",".join(str(s.get("name")) for s in spec.get("subsets") or [] if isinstance(s, dict))
    return [str(spec.get("host", "")), subsets or "-"]


def _se(spec: dict[str, Any]) -> Row:
    return [_hosts(spec), _ports(spec.get("ports")), str(spec.get("location", "") or "-"),
            str(spec.get("resolution", "") or "-"), str(len(spec.get("endpoints") or []))]


def _ap(spec: dict[str, Any]) -> Row:
    sel = (spec.get("selector") or {}).get("matchLabels")
    return [str(spec.get("action", "ALLOW")), _labels(sel) or "<all>",
            str(len(spec.get("rules") or []))]


def _pa(spec: dict[str, Any]) -> Row:
    sel = (spec.get("selector") or {}).get("matchLabels")
    return [str((spec.get("mtls") or {}).get("mode", "UNSET")), _labels(sel) or "<all>"]


def _svc(spec: dict[str, Any]) -> Row:
    return [_ports(spec.get("ports")), _labels(spec.get("selector")) or "-"]


def _wl(spec: dict[str, Any]) -> Row:
    return [str(spec.get("replicas", 1)), str(spec.get("serviceAccount", "default")),
            _labels(spec.get("labels")), _ports(spec.get("ports"))]


def _route(spec: dict[str, Any]) -> Row:
    parents = ",".join(str(p.get("name")) for p in spec.get("parentRefs") or []
                       if isinstance(p, dict))
    return [parents or "-", ",".join(spec.get("hostnames") or []) or "*",
            str(len(spec.get("rules") or []))]


COLUMNS: dict[str, tuple[list[str], Callable[[dict[str, Any]], Row]]] = {
    "VirtualService": (["HOSTS", "GATEWAYS", "ROUTES"], _vs),
    "DestinationRule": (["HOST", "SUBSETS"], _dr),
    "ServiceEntry": (["HOSTS", "PORTS", "LOCATION", "RESOLUTION", "ENDPOINTS"], _se),
    "AuthorizationPolicy": (["ACTION", "SELECTOR", "RULES"], _ap),
    "PeerAuthentication": (["MODE", "SELECTOR"], _pa),
    "Service": (["PORTS", "SELECTOR"], _svc),
    "Workload": (["REPLICAS", "SERVICE-ACCOUNT", "LABELS", "PORTS"], _wl),
    "HTTPRoute": (["PARENTS", "HOSTNAMES", "RULES"], _route),
    "GRPCRoute": (["PARENTS", "HOSTNAMES", "RULES"], _route),
}


def format_table(kind: str, items: list[dict[str, Any]]) -> str:
    headers, row_of = COLUMNS.get(kind, ([], lambda spec: []))
    rows: list[Row] = [["NAMESPACE", "NAME", *headers, "SOURCE"]]
    for item in items:
        res = item["resource"]
        meta = res.get("metadata") or {}
        spec = res.get("spec") or {}
        try:
            cells = row_of(spec)
        except (AttributeError, TypeError):  # an unexpected shape must not hide the resource
            cells = ["?"] * len(headers)
        source = str(item.get("source", "")).split(":", 1)[0]
        rows.append([str(meta.get("namespace", "default")), str(meta.get("name", "")),
                     *cells, source])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def run_get(args: argparse.Namespace) -> int:
    try:
        kind = kinds.resolve(args.kind)
    except ValueError as exc:
        return _fail(str(exc))
    namespace = None if args.all_namespaces else (args.namespace or "default")
    try:
        reply = _client(args).get("/api/v1/resources", {
            "kind": kind, "namespace": namespace or "", "name": args.name or "",
        })
    except ClientError as exc:
        _print_errors(getattr(exc, "errors", None) or [str(exc)])
        return 1
    items: list[dict[str, Any]] = reply.get("items", [])
    if args.name and not items:
        where = f" in namespace {namespace}" if namespace else ""
        return _fail(f"{kind} {args.name!r} not found{where}")
    if args.output == "json":
        resources = [i["resource"] for i in items]
        print(json.dumps(resources[0] if args.name else {"items": resources}, indent=2))
    elif args.output == "yaml":
        import yaml

        print(yaml.safe_dump_all([i["resource"] for i in items], sort_keys=False), end="")
    elif args.output == "name":
        info = kinds.lookup(kind)
        for i in items:
            print(f"{info.resource_name if info else kind}/{i['resource']['metadata']['name']}")
    elif not items:
        where = f"in namespace {namespace} (use -A for all namespaces)" if namespace else ""
        print(f"No {kind} resources found {where}".rstrip() + ".", file=sys.stderr)
    else:
        print(format_table(kind, items))
    return 0
