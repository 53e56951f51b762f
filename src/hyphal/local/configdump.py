"""Reading a sidecar's `/config_dump` (hyphal.proxy.admin's document) into table rows.

The document: `xds.types.{LDS,RDS,CDS,EDS,SDS}` (version, state, last_nack), `config` (the
compiled runtime tables: listeners, routes, clusters with their endpoints) and `certificate`
(spiffe_id, not_after, …). Pure functions; absent parts just give no rows.
"""

from __future__ import annotations

from typing import Any

SECTIONS = ("listeners", "routes", "clusters", "endpoints")

Row = list[Any]

_KINDS = {"LDS": "listeners", "RDS": "routes", "CDS": "clusters", "EDS": "endpoints",
          "SDS": "secrets"}


def versions(dump: dict[str, Any]) -> dict[str, str]:
    """The version each xDS type was last ACKed at, e.g. {"listeners": "3f2a…", …}.

    A type whose last response was NACKed shows as `<version> (NACK)`.
    """
    out: dict[str, str] = {}
    types = ((dump.get("xds") or {}).get("types")) or {}
    for kind, st in types.items():
        if not isinstance(st, dict):
            continue
        version = str(st.get("version") or "")
        if st.get("state") == "nacked":
            version = f"{version or '-'} (NACK)"
        if version:
            out[_KINDS.get(kind, kind)] = version
    return out


def cert_expiry(dump: dict[str, Any]) -> str | None:
    cert = dump.get("certificate") or {}
    value = cert.get("not_after")
    return str(value) if value else None


def _config(dump: dict[str, Any]) -> dict[str, Any]:
    cfg = dump.get("config")
    return cfg if isinstance(cfg, dict) else {}


def listener_rows(dump: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for lst in _config(dump).get("listeners") or []:
        routes = lst.get("route_config") or ("inline" if lst.get("inline_routes") else None)
        target = routes or lst.get("tcp_cluster")
        rbac = lst.get("rbac")
        rows.append([lst.get("name"), f"{lst.get('host')}:{lst.get('port')}", lst.get("kind"),
                     "mTLS" if lst.get("tls") else "-", "yes" if rbac else "-", target])
    return rows


def _match(m: dict[str, Any]) -> str:
    path = m.get("path") or {}
    text = f"{path.get('kind', 'prefix')} {path.get('value', '/')}"
    if m.get("methods"):
        text += " " + ",".join(m["methods"])
    for h in m.get("headers") or []:
        text += f" [{h.get('name')}]"
    return text


def _action(a: dict[str, Any] | None) -> str:
    if not a:
        return "-"
    if "clusters" in a:
        cs = a["clusters"]
        if len(cs) == 1:
            return str(cs[0].get("name"))
        return " ".join(f"{c.get('name')}={c.get('weight')}" for c in cs)
    if "status" in a and "body" in a:
        return f"direct {a['status']}"
    if "status" in a:
        return f"redirect {a['status']}"
    return "-"


def _route_tables(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    tables = list((cfg.get("routes") or {}).values())
    for lst in cfg.get("listeners") or []:
        inline = lst.get("inline_routes")
        if inline:
            tables.append({**inline, "name": inline.get("name") or f"{lst.get('name')} (inline)"})
    return tables


def route_rows(dump: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for rt in _route_tables(_config(dump)):
        for vh in rt.get("virtual_hosts") or []:
            domains = list(vh.get("domains") or [])
            shown = ",".join(domains[:3]) + (f",+{len(domains) - 3}" if len(domains) > 3 else "")
            for r in vh.get("routes") or []:
                rows.append([rt.get("name"), vh.get("name"), shown, _match(r.get("match") or {}),
                             _action(r.get("action")), r.get("timeout_s")])
    return rows


def cluster_rows(dump: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for c in (_config(dump).get("clusters") or {}).values():
        tls = c.get("tls")
        sans = ",".join(tls.get("expected_sans") or []) if tls else ""
        eps = c.get("endpoints") or []
        healthy = sum(1 for e in eps if e.get("healthy", True))
        rows.append([c.get("name"), c.get("lb"), f"{healthy}/{len(eps)}",
                     f"mTLS {sans}".strip() if tls else "-"])
    return rows


def endpoint_rows(dump: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for c in (_config(dump).get("clusters") or {}).values():
        for e in c.get("endpoints") or []:
            labels = ",".join(f"{k}={v}" for k, v in sorted((e.get("labels") or {}).items()))
            rows.append([c.get("name"), f"{e.get('host')}:{e.get('port')}",
                         "HEALTHY" if e.get("healthy", True) else "UNHEALTHY", e.get("weight"),
                         e.get("identity"), labels or None])
    return rows


HEADERS: dict[str, list[str]] = {
    "listeners": ["NAME", "ADDRESS", "KIND", "TLS", "RBAC", "ROUTES/CLUSTER"],
    "routes": ["ROUTE CONFIG", "VIRTUAL HOST", "DOMAINS", "MATCH", "CLUSTER(S)", "TIMEOUT"],
    "clusters": ["NAME", "LB", "HEALTHY", "TLS"],
    "endpoints": ["CLUSTER", "ADDRESS", "HEALTH", "WEIGHT", "IDENTITY", "LABELS"],
}

ROWS = {
    "listeners": listener_rows,
    "routes": route_rows,
    "clusters": cluster_rows,
    "endpoints": endpoint_rows,
}
