"""`hyphal check [DIR]`: pre-flight and config analysis, in the spirit of `istioctl analyze`.

Online (a control plane answers): its resources, its live registry, which sidecars ACKed the
latest config, the CA roots and, for a local mesh, each sidecar's certificate. Offline (DIR,
or no control plane): the resources in DIR, loaded and validated, with workloads standing in
for live endpoints. The analyzers are pure functions of plain JSON (resources as the user
wrote them, status as `/api/v1/status` reports it) that return findings:

  HYP0001 error    a resource does not load or validate
  HYP0101 warning  a VirtualService routes to a host with no endpoints
  HYP0102 warning  a DestinationRule subset selects no workload
  HYP0103 warning  an AuthorizationPolicy's selector matches no workload
  HYP0201 error    a sidecar NACKed its config / warning: has not ACKed the latest push
  HYP0202 warning  a service has no sidecar that ACKed the latest config
  HYP0301 warning  a certificate (CA root or workload) is close to expiry
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finding:
    level: str  # error | warning | info
    code: str
    resource: str  # "Kind namespace/name", or a sidecar's node id
    message: str

    def line(self) -> str:
        return f"{self.level.capitalize():7} [{self.code}] ({self.resource}) {self.message}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a service's traffic can go: labels of a workload instance (or a live endpoint)."""

    namespace: str
    labels: Mapping[str, str]


def _meta(r: Json) -> tuple[str, str]:
    md = r.get("metadata") or {}
    return str(md.get("namespace") or "default"), str(md.get("name") or "?")


def _ref(r: Json) -> str:
    ns, name = _meta(r)
    return f"{r.get('kind')} {ns}/{name}"


def fqdn(host: str, namespace: str, domain: str = "cluster.local") -> str:
    """`product` / `product.shop` / the FQDN → `product.shop.svc.<domain>`; other hosts as is."""
    if host.endswith(f".svc.{domain}"):
        return host
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.{domain}"
    if len(parts) == 2:
        return f"{host}.svc.{domain}"
    return host


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def endpoints_from_resources(resources: Iterable[Json],
                             domain: str = "cluster.local") -> dict[str, list[Endpoint]]:
    """Offline stand-in for the registry: each Service's workloads (replicas > 0), each
    ServiceEntry's endpoints."""
    items = list(resources)
    workloads = [(_meta(r)[0], dict((r.get("spec") or {}).get("labels") or {}),
                  int((r.get("spec") or {}).get("replicas", 1)))
                 for r in items if r.get("kind") == "Workload"]
    out: dict[str, list[Endpoint]] = {}
    for r in items:
        ns, name = _meta(r)
        spec = r.get("spec") or {}
        if r.get("kind") == "Service":
            selector = dict(spec.get("selector") or {})
            out[fqdn(name, ns, domain)] = [
                Endpoint(wns, labels) for wns, labels, replicas in workloads
                if wns == ns and replicas > 0 and selector and _selects(selector, labels)]
        elif r.get("kind") == "ServiceEntry":
            eps = [Endpoint(ns, dict(e.get("labels") or {})) for e in spec.get("endpoints") or []]
            for host in spec.get("hosts") or []:
                out.setdefault(str(host), []).extend(eps or [Endpoint(ns, {})])
    return out


def endpoints_from_status(status: Json) -> dict[str, list[Endpoint]]:
    """The live registry of `/api/v1/status` (`service` is `host:port`)."""
    out: dict[str, list[Endpoint]] = {}
    for svc in (status.get("registry") or {}).get("services") or []:
        host = str(svc.get("service", "")).rsplit(":", 1)[0]
        ns = host.split(".")[1] if ".svc." in host else ""
        out.setdefault(host, []).extend(
            Endpoint(ns, dict(e.get("labels") or {})) for e in svc.get("endpoints") or [])
    return out


def _destinations(vs: Json) -> Iterable[str]:
    spec = vs.get("spec") or {}
    for section in ("http", "tcp", "tls"):
        for route in spec.get(section) or []:
            for d in route.get("route") or []:
                host = (d.get("destination") or {}).get("host")
                if host:
                    yield str(host)


def analyze_resources(resources: list[Json], endpoints: Mapping[str, list[Endpoint]],
                      domain: str = "cluster.local") -> list[Finding]:
    findings: list[Finding] = []
    workload_labels = [(_meta(r)[0], dict((r.get("spec") or {}).get("labels") or {}))
                       for r in resources if r.get("kind") == "Workload"]
    live_labels = [(e.namespace, e.labels) for eps in endpoints.values() for e in eps]
    for r in resources:
        kind = r.get("kind")
        ns, _ = _meta(r)
        spec = r.get("spec") or {}
        if kind == "VirtualService":
            seen: set[str] = set()
            for host in _destinations(r):
                full = fqdn(host, ns, domain)
                if full in seen:
                    continue
                seen.add(full)
                if not endpoints.get(full):
                    findings.append(Finding(
                        "warning", "HYP0101", _ref(r),
                        f"routes to {host} ({full}), which has no endpoints: requests will get "
                        "503 no_healthy_upstream; start a workload its Service selects"))
        elif kind == "DestinationRule":
            host = fqdn(str(spec.get("host", "")), ns, domain)
            eps = endpoints.get(host, [])
            for subset in spec.get("subsets") or []:
                labels = dict(subset.get("labels") or {})
                if not any(_selects(labels, e.labels) for e in eps):
                    have = sorted({f"{k}={v}" for e in eps for k, v in e.labels.items()})
                    findings.append(Finding(
                        "warning", "HYP0102", _ref(r),
                        f"subset {subset.get('name')!r} (labels "
                        f"{', '.join(f'{k}={v}' for k, v in labels.items()) or 'none'}) selects "
                        f"no workload of {host}; its endpoints have "
                        f"{', '.join(have) or 'no labels (no endpoints at all)'}"))
        elif kind == "AuthorizationPolicy":
            selector = dict((spec.get("selector") or {}).get("matchLabels") or {})
            if not selector:
                continue  # namespace-wide (or mesh-wide in the root namespace)
            pool = workload_labels + live_labels
            if not any(wns == ns and _selects(selector, labels) for wns, labels in pool):
                findings.append(Finding(
                    "warning", "HYP0103", _ref(r),
                    f"selector {', '.join(f'{k}={v}' for k, v in selector.items())} matches no "
                    f"workload in namespace {ns}: this policy applies to nothing"))
    return findings


def analyze_sync(status: Json, resources: list[Json],
                 domain: str = "cluster.local") -> list[Finding]:
    """Sidecars that NACKed or have not ACKed the latest push; services with no synced one."""
    findings: list[Finding] = []
    synced_workloads: set[tuple[str, str]] = set()
    for conn in (status.get("xds") or {}).get("connections") or []:
        if conn.get("proxy_mode") != "sidecar":
            continue
        node = str(conn.get("node_id"))
        ok = True
        for t in conn.get("types") or []:
            if t.get("last_nack"):
                ok = False
                findings.append(Finding("error", "HYP0201", node,
                                        f"{t.get('type')} NACKed: {t.get('last_nack')}"))
            elif t.get("sent_version") and t.get("sent_version") != t.get("acked_version"):
                ok = False
                findings.append(Finding(
                    "warning", "HYP0201", node,
                    f"{t.get('type')} version {t.get('sent_version')} sent, not ACKed yet "
                    f"(ACKed: {t.get('acked_version') or 'none'})"))
        if ok:
            synced_workloads.add((str(conn.get("namespace")), str(conn.get("cluster"))))
    workloads = [(_meta(r)[0], _meta(r)[1], dict((r.get("spec") or {}).get("labels") or {}))
                 for r in resources if r.get("kind") == "Workload"]
    for r in resources:
        if r.get("kind") != "Service":
            continue
        ns, _ = _meta(r)
        selector = dict((r.get("spec") or {}).get("selector") or {})
        selected = [(wns, wname) for wns, wname, labels in workloads
                    if wns == ns and selector and _selects(selector, labels)]
        if selected and not any(w in synced_workloads for w in selected):
            findings.append(Finding(
                "warning", "HYP0202", _ref(r),
                f"no sidecar of {', '.join(n for _, n in selected)} has ACKed the latest config "
                f"(is it running? see `hyphal status`)"))
    return findings


def analyze_certs(status: Json, replicas: list[Json], now: dt.datetime,
                  root_warn: dt.timedelta, workload_warn: dt.timedelta) -> list[Finding]:
    findings: list[Finding] = []

    def left(iso: str | None) -> dt.timedelta | None:
        if not iso:
            return None
        try:
            when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when - now

    for root in (status.get("ca") or {}).get("roots") or []:
        rest = left(root.get("not_after"))
        if rest is not None and rest < root_warn:
            findings.append(Finding(
                "warning", "HYP0301", f"CA root {root.get('subject')}",
                f"expires {root.get('not_after')} ({_human(rest)}): add a new root to "
                "ca/trust-bundle.pem and rotate before then"))
    for r in replicas:
        rest = left(r.get("cert_expiry"))
        if rest is not None and rest < workload_warn:
            findings.append(Finding(
                "warning", "HYP0301", f"{r.get('workload')}-{r.get('replica')}",
                f"workload certificate expires {r.get('cert_expiry')} ({_human(rest)}): "
                "rotation is not happening; check the sidecar log and the CA"))
    return findings


def _human(delta: dt.timedelta) -> str:
    s = delta.total_seconds()
    if s < 0:
        return "already expired"
    if s < 3600:
        return f"in {s / 60:.0f} minutes"
    if s < 172800:
        return f"in {s / 3600:.1f} hours"
    return f"in {s / 86400:.0f} days"


# --- the command ----------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from hyphal.cli.stat import add_mesh_arguments

    p = sub.add_parser("check", help="analyze the mesh's config (like istioctl analyze)")
    p.add_argument("dir", nargs="?", type=Path, default=None, metavar="DIR",
                   help="analyze these resource files offline instead of the running mesh")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument("--domain", default="cluster.local")
    p.add_argument("--failure-threshold", choices=("error", "warning"), default="error",
                   help="exit 1 when a finding at this level or above exists (default: error)")
    p.add_argument("--root-warn-days", type=float, default=30.0)
    p.add_argument("--cert-warn-minutes", type=float, default=60.0)
    add_mesh_arguments(p)
    p.set_defaults(func=run)


def _offline(path: Path, domain: str) -> tuple[list[Json], list[Finding]]:
    from hyphal.config import ConfigErrors, load_paths, to_dict, validate

    try:
        rs = load_paths([path])
    except ConfigErrors as exc:
        return [], [Finding("error", "HYP0001", str(path), str(e)) for e in exc.errors]
    errors = validate(rs, domain=domain)
    return ([to_dict(r) for r in rs],
            [Finding("error", "HYP0001", str(path), str(e)) for e in errors])


def _online(args: argparse.Namespace) -> tuple[list[Json], Json, list[Json]] | str:
    from hyphal.cli.client import ClientError
    from hyphal.cli.stat import client_for

    try:
        client = client_for(args)
        items = client.get("/api/v1/resources")["items"]
        status = client.get("/api/v1/status")
    except ClientError as exc:
        return str(exc)
    replicas: list[Json] = []
    if args.run_dir:
        from hyphal.local.observe import mesh_view
        from hyphal.local.rundir import RunDir

        try:
            replicas = list(mesh_view(RunDir(args.run_dir).require_state())["replicas"])
        except (FileNotFoundError, OSError, KeyError):
            replicas = []
    return [i["resource"] for i in items], status, replicas


def run(args: argparse.Namespace) -> int:
    findings: list[Finding] = []
    if args.dir is not None:
        resources, findings = _offline(args.dir, args.domain)
        findings += analyze_resources(resources, endpoints_from_resources(resources, args.domain),
                                      args.domain)
        where = f"{args.dir} (offline)"
    else:
        got = _online(args)
        if isinstance(got, str):
            print(f"hyphal check: {got}\n(give a DIR to analyze files offline)", file=sys.stderr)
            return 1
        resources, status, replicas = got
        findings += analyze_resources(resources, endpoints_from_status(status), args.domain)
        findings += analyze_sync(status, resources, args.domain)
        findings += analyze_certs(status, replicas, dt.datetime.now(dt.UTC),
                                  dt.timedelta(days=args.root_warn_days),
                                  dt.timedelta(minutes=args.cert_warn_minutes))
        where = "the running mesh"
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order[f.level], f.code, f.resource))
    if args.output == "json":
        print(json.dumps({"checked": where, "resources": len(resources),
                          "findings": [asdict(f) for f in findings]}, indent=2))
    elif findings:
        print("\n".join(f.line() for f in findings))
    else:
        print(f"✔ No problems found in {where} ({len(resources)} resources).")
    worst = min((order[f.level] for f in findings), default=9)
    return 1 if worst <= order[args.failure_threshold] else 0
