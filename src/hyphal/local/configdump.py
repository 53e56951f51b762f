"""Reading a sidecar's `/config_dump` (Envoy's admin format, protobuf JSON) into table rows.

Pure functions over the parsed JSON; tolerant of absent sections (a sidecar that has not
received a type yet simply has no rows for it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

SECTIONS = ("listeners", "routes", "clusters", "endpoints")

_DUMP_TYPES = {
    "listeners": "ListenersConfigDump",
    "routes": "RoutesConfigDump",
    "clusters": "ClustersConfigDump",
    "endpoints": "EndpointsConfigDump",
    "secrets": "SecretsConfigDump",
}

Row = list[Any]


def _configs(dump: dict[str, Any], section: str) -> Iterator[dict[str, Any]]:
    suffix = _DUMP_TYPES[section]
    for cfg in dump.get("configs", []) or []:
        if str(cfg.get("@type", "")).endswith(suffix):
            yield cfg


def _addr(a: dict[str, Any] | None) -> str:
    sa = (a or {}).get("socket_address") or (a or {}).get("socketAddress") or {}
    port = sa.get("port_value", sa.get("portValue", ""))
    return f"{sa.get('address', '')}:{port}" if sa else "-"


def _g(d: dict[str, Any], snake: str) -> Any:
    """A field by its snake_case or camelCase JSON name."""
    if snake in d:
        return d[snake]
    head, *rest = snake.split("_")
    return d.get(head + "".join(p.title() for p in rest))


def _items(cfg: dict[str, Any], *keys: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(version, item) for every entry of the dynamic/static lists named by `keys`."""
    top_version = str(_g(cfg, "version_info") or "")
    for key in keys:
        for entry in _g(cfg, key) or []:
            state = _g(entry, "active_state") or entry
            yield str(_g(state, "version_info") or _g(entry, "version_info") or top_version), state


def versions(dump: dict[str, Any]) -> dict[str, str]:
    """The version each xDS type was last ACKed at, e.g. {"listeners": "3f2a…", …}."""
    out: dict[str, str] = {}
    for section in (*SECTIONS, "secrets"):
        for cfg in _configs(dump, section):
            v = _g(cfg, "version_info")
            if not v:
                keys = {"listeners": ("dynamic_listeners",),
                        "routes": ("dynamic_route_configs",),
                        "clusters": ("dynamic_active_clusters",),
                        "endpoints": ("dynamic_endpoint_configs",),
                        "secrets": ("dynamic_active_secrets",)}[section]
                found = sorted({ver for ver, _ in _items(cfg, *keys) if ver})
                v = ",".join(found)
            if v:
                out[section] = str(v)
    return out


def listener_rows(dump: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for cfg in _configs(dump, "listeners"):
        for version, state in _items(cfg, "static_listeners", "dynamic_listeners"):
            lst = state.get("listener") or {}
            filters = []
            tls = False
            for chain in _g(lst, "filter_chains") or []:
                tls = tls or bool(_g(chain, "transport_socket"))
                filters += [f.get("name", "?").removeprefix("envoy.filters.network.")
                            for f in chain.get("filters", [])]
            rows.append([lst.get("name"), _addr(lst.get("address")), ",".join(filters) or "-",
                         "mTLS" if tls else "-", version])
    return rows


def route_rows(dump: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for cfg in _configs(dump, "routes"):
        for version, state in _items(cfg, "static_route_configs", "dynamic_route_configs"):
            rc = _g(state, "route_config") or {}
            for vh in _g(rc, "virtual_hosts") or []:
                domains = vh.get("domains", [])
                shown = ",".join(domains[:3]) + (f",+{len(domains) - 3}" if len(domains) > 3 else "")
                for r in vh.get("routes", []):
                    rows.append([rc.get("name"), vh.get("name"), shown, _match(r.get("match", {})),
                                 _target(r), version])
    return rows


def _match(m: dict[str, Any]) -> str:
    for key in ("prefix", "path"):
        if key in m:
            return f"{key} {m[key]}"
    regex = _g(m, "safe_regex")
    if regex:
        return f"regex {regex.get('regex')}"
    return "*"


def _target(route: dict[str, Any]) -> str:
    r = route.get("route")
    if r is None:
        if "direct_response" in route or "directResponse" in route:
            dr = _g(route, "direct_response")
            return f"direct {dr.get('status')}"
        return "-"
    if "cluster" in r:
        return str(r["cluster"])
    wc = _g(r, "weighted_clusters") or {}
    parts = []
    for c in wc.get("clusters", []):
        weight = c.get("weight")
        if isinstance(weight, dict):
            weight = weight.get("value")
        parts.append(f"{c.get('name')}={weight}")
    return " ".join(parts) or "-"


def cluster_rows(dump: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for cfg in _configs(dump, "clusters"):
        for version, state in _items(cfg, "static_clusters", "dynamic_active_clusters"):
            c = state.get("cluster") or {}
            rows.append([c.get("name"), c.get("type", "EDS"), _g(c, "lb_policy") or "ROUND_ROBIN",
                         "mTLS" if _g(c, "transport_socket") else "-", version])
    return rows


def endpoint_rows(dump: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for cfg in _configs(dump, "endpoints"):
        for _version, state in _items(cfg, "static_endpoint_configs", "dynamic_endpoint_configs"):
            cla = _g(state, "endpoint_config") or {}
            for group in cla.get("endpoints", []) or []:
                for lbe in _g(group, "lb_endpoints") or []:
                    ep = lbe.get("endpoint") or {}
                    md = ((lbe.get("metadata") or {}).get("filter_metadata")
                          or (lbe.get("metadata") or {}).get("filterMetadata") or {})
                    identity = (md.get("hyphal") or {}).get("identity")
                    weight = _g(lbe, "load_balancing_weight")
                    if isinstance(weight, dict):
                        weight = weight.get("value")
                    rows.append([_g(cla, "cluster_name"), _addr(ep.get("address")),
                                 _g(lbe, "health_status") or "UNKNOWN", weight or 1, identity])
    return rows


HEADERS: dict[str, list[str]] = {
    "listeners": ["NAME", "ADDRESS", "FILTERS", "TLS", "VERSION"],
    "routes": ["ROUTE CONFIG", "VIRTUAL HOST", "DOMAINS", "MATCH", "CLUSTER(S)", "VERSION"],
    "clusters": ["NAME", "TYPE", "LB", "TLS", "VERSION"],
    "endpoints": ["CLUSTER", "ADDRESS", "HEALTH", "WEIGHT", "IDENTITY"],
}

ROWS = {
    "listeners": listener_rows,
    "routes": route_rows,
    "clusters": cluster_rows,
    "endpoints": endpoint_rows,
}
