"""Semantic validation across resources: hosts, subsets, ports, regexes, retry-ons, principals."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from hyphal.config.errors import ConfigError, format_path
from hyphal.config.models import (
    AuthorizationPolicy,
    DestinationRule,
    RateLimitPolicy,
    ResourceModel,
    Service,
    VirtualService,
)
from hyphal.config.models.destination_rule import TrafficPolicy
from hyphal.config.models.gateway_api import (
    BackendObjectReference,
    GatewayGRPCRoute,
    GatewayHTTPRoute,
)
from hyphal.config.models.virtual_service import Destination, HTTPMatchRequest, StringMatch
from hyphal.config.resources import ResourceSet

__all__ = ["RETRY_ON", "re2_problem", "resolve_host", "validate"]

Loc = tuple[int | str, ...]

RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)

_PRINCIPAL = re.compile(r"^\*?[^/*\s]*/ns/[^/\s]+/sa/[^/*\s]+\*?$|^[^/\s]+/ns/[^/\s]+/\*$")


def resolve_host(
    host: str, namespace: str, domain: str = "cluster.local", known_hosts: Collection[str] = ()
) -> str:
    """Istio's host resolution: `product` in namespace `shop` -> `product.shop.svc.cluster.local`.

    `product.shop` and `product.shop.svc` expand the same way; any other dotted name (and any
    name in `known_hosts`, e.g. ServiceEntry hosts) is taken as written.
    """
    if host in known_hosts or "*" in host:
        return host
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.{domain}"
    if len(parts) == 2:
        return f"{host}.svc.{domain}"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.{domain}"
    return host


_RE2_UNSUPPORTED = (
    (re.compile(r"\(\?="), "a lookahead (?=...)"),
    (re.compile(r"\(\?!"), "a negative lookahead (?!...)"),
    (re.compile(r"\(\?<="), "a lookbehind (?<=...)"),
    (re.compile(r"\(\?<!"), "a negative lookbehind (?<!...)"),
    (re.compile(r"\(\?>"), "an atomic group (?>...)"),
    (re.compile(r"\(\?P="), "a named backreference (?P=...)"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]"), "a backreference (\\1..\\9)"),
    (re.compile(r"\\k<"), "a named backreference \\k<...>"),
    (re.compile(r"[*+?}][+]"), "a possessive quantifier"),
)


def re2_problem(pattern: str) -> str | None:
    """Why `pattern` will not work in Envoy's RE2 engine, or None when it will."""
    for needle, what in _RE2_UNSUPPORTED:
        if needle.search(pattern):
            return f"{pattern!r} uses {what}, which RE2 (Envoy's regex engine) does not support"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{pattern!r} is not a valid regex: {exc}"
    return None


@dataclass(frozen=True, slots=True)
class _Host:
    fqdn: str
    ports: tuple[int, ...]
    owner: ResourceModel


@dataclass(slots=True)
class _Checker:
    rs: ResourceSet
    domain: str
    errors: list[ConfigError] = field(default_factory=list)
    hosts: dict[str, _Host] = field(default_factory=dict)
    subsets: dict[str, set[str]] = field(default_factory=dict)
    se_hosts: set[str] = field(default_factory=set)

    def err(self, r: ResourceModel, loc: Loc, reason: str) -> None:
        src = r.source
        where = src.file if src else f"{r.kind}/{r.namespace}/{r.name}"
        self.errors.append(ConfigError(where, src.document if src else 0, format_path(loc), reason))

    def resolve(self, host: str, namespace: str) -> str:
        return resolve_host(host, namespace, self.domain, self.se_hosts)

    def index(self) -> None:
        self.se_hosts.update(h for se in self.rs.service_entries for h in se.spec.hosts)
        for svc in self.rs.services:
            fqdn = f"{svc.name}.{svc.namespace}.svc.{self.domain}"
            self.hosts[fqdn] = _Host(fqdn, tuple(p.port for p in svc.spec.ports), svc)
        for se in self.rs.service_entries:
            for i, h in enumerate(se.spec.hosts):
                prev = self.hosts.get(h)
                if prev is not None and prev.owner is not se:
                    self.err(
                        se,
                        ("spec", "hosts", i),
                        f"host {h!r} is already defined by "
                        f"{prev.owner.kind} {prev.owner.namespace}/{prev.owner.name}",
                    )
                    continue
                self.hosts[h] = _Host(h, tuple(p.number for p in se.spec.ports), se)
        for dr in self.rs.destination_rules:
            fqdn = self.resolve(dr.spec.host, dr.namespace)
            self.subsets.setdefault(fqdn, set()).update(s.name for s in dr.spec.subsets)

    def host(self, r: ResourceModel, loc: Loc, host: str) -> _Host | None:
        fqdn = self.resolve(host, r.namespace)
        found = self.hosts.get(fqdn)
        if found is None:
            shown = repr(host) if fqdn == host else f"{host!r} ({fqdn})"
            self.err(r, loc, f"host {shown} is not a Service or ServiceEntry host")
        return found

    def destination(self, r: ResourceModel, loc: Loc, dest: Destination) -> None:
        found = self.host(r, (*loc, "host"), dest.host)
        if found is None:
            return
        if dest.subset is not None and dest.subset not in self.subsets.get(found.fqdn, set()):
            self.err(
                r,
                (*loc, "subset"),
                f"subset {dest.subset!r} of {found.fqdn} is not defined by any DestinationRule",
            )
        ports = ", ".join(str(p) for p in found.ports)
        if dest.port is None:
            if len(found.ports) > 1:
                self.err(r, (*loc, "port"), f"required: {found.fqdn} has several ports ({ports})")
        elif dest.port.number not in found.ports:
            self.err(
                r,
                (*loc, "port", "number"),
                f"{found.fqdn} has no port {dest.port.number} (ports: {ports})",
            )

    def regex(self, r: ResourceModel, loc: Loc, m: StringMatch | None) -> None:
        if m is not None and m.regex is not None:
            problem = re2_problem(m.regex)
            if problem:
                self.err(r, (*loc, "regex"), problem)

    def match(self, r: ResourceModel, loc: Loc, m: HTTPMatchRequest) -> None:
        for name in ("uri", "scheme", "method", "authority"):
            self.regex(r, (*loc, name), getattr(m, name))
        for alias, table in (
            ("headers", m.headers),
            ("queryParams", m.query_params),
            ("withoutHeaders", m.without_headers),
        ):
            for key, sm in table.items():
                self.regex(r, (*loc, alias, key), sm)

    def virtual_service(self, vs: VirtualService, routed: dict[str, VirtualService]) -> None:
        for i, h in enumerate(vs.spec.hosts):
            found = self.host(vs, ("spec", "hosts", i), h)
            if found is None:
                continue
            prev = routed.setdefault(found.fqdn, vs)
            if prev is not vs:
                self.err(
                    vs,
                    ("spec", "hosts", i),
                    f"{found.fqdn} is already routed by "
                    f"VirtualService {prev.namespace}/{prev.name} (one VirtualService per host)",
                )
        for i, route in enumerate(vs.spec.http):
            base: Loc = ("spec", "http", i)
            for j, m in enumerate(route.match):
                self.match(vs, (*base, "match", j), m)
            for j, d in enumerate(route.route):
                self.destination(vs, (*base, "route", j, "destination"), d.destination)
            if route.mirror is not None:
                self.destination(vs, (*base, "mirror"), route.mirror)
            for j, mp in enumerate(route.mirrors):
                self.destination(vs, (*base, "mirrors", j, "destination"), mp.destination)
            if route.retries is not None:
                for cond in route.retries.retry_on_list:
                    if cond not in RETRY_ON and not (cond.isdigit() and 100 <= int(cond) <= 599):
                        self.err(
                            vs,
                            (*base, "retries", "retryOn"),
                            f"{cond!r} is not a retry condition (known: "
                            f"{', '.join(sorted(RETRY_ON))}, or an HTTP status code)",
                        )
        for i, tcp in enumerate(vs.spec.tcp):
            for j, td in enumerate(tcp.route):
                self.destination(vs, ("spec", "tcp", i, "route", j, "destination"), td.destination)

    def destination_rule(self, dr: DestinationRule, ruled: dict[str, DestinationRule]) -> None:
        found = self.host(dr, ("spec", "host"), dr.spec.host)
        if found is None:
            return
        prev = ruled.setdefault(found.fqdn, dr)
        if prev is not dr:
            self.err(
                dr,
                ("spec", "host"),
                f"{found.fqdn} already has DestinationRule "
                f"{prev.namespace}/{prev.name} (one DestinationRule per host)",
            )
        pols: list[tuple[Loc, TrafficPolicy | None]] = [
            (("spec", "trafficPolicy"), dr.spec.traffic_policy)
        ]
        pols += [
            (("spec", "subsets", i, "trafficPolicy"), s.traffic_policy)
            for i, s in enumerate(dr.spec.subsets)
        ]
        for loc, pol in pols:
            for k, pl in enumerate(pol.port_level_settings if pol else ()):
                if pl.port.number not in found.ports:
                    self.err(
                        dr,
                        (*loc, "portLevelSettings", k, "port", "number"),
                        f"{found.fqdn} has no port {pl.port.number}",
                    )

    def service(self, svc: Service) -> None:
        if not svc.spec.selector:
            self.err(
                svc,
                ("spec", "selector"),
                "must not be empty: a Service selects its Workloads by their labels",
            )
            return
        selected = [
            w
            for w in self.rs.workloads
            if w.namespace == svc.namespace
            and all(w.spec.labels.get(k) == v for k, v in svc.spec.selector.items())
        ]
        for i, p in enumerate(svc.spec.ports):
            target = p.target
            for w in selected:
                if isinstance(target, str):
                    ok = any(wp.name == target for wp in w.spec.ports)
                    what = f"no port named {target!r}"
                else:
                    ok = any(wp.port == target for wp in w.spec.ports)
                    what = f"no port {target}"
                if not ok:
                    loc: Loc = ("spec", "ports", i, "targetPort" if p.target_port else "port")
                    self.err(svc, loc, f"selected Workload {w.namespace}/{w.name} has {what}")

    def service_named(self, r: ResourceModel, loc: Loc, name: str, ns: str) -> Service | None:
        found = next((s for s in self.rs.services if s.name == name and s.namespace == ns), None)
        if found is None:
            self.err(r, loc, f'no Service "{name}" in namespace "{ns}"')
        return found

    def backend_ref(self, r: ResourceModel, loc: Loc, b: BackendObjectReference) -> None:
        if b.namespace is not None and b.namespace != r.namespace:
            self.err(
                r,
                (*loc, "namespace"),
                f'a reference to namespace "{b.namespace}" needs a ReferenceGrant, which hyphal '
                f'does not support: refer to a Service in namespace "{r.namespace}"',
            )
            return
        svc = self.service_named(r, (*loc, "name"), b.name, r.namespace)
        if svc is not None and b.port not in (p.port for p in svc.spec.ports):
            ports = ", ".join(str(p.port) for p in svc.spec.ports)
            self.err(
                r,
                (*loc, "port"),
                f'Service "{b.name}" in namespace "{r.namespace}" has no port {b.port} '
                f"(ports: {ports})",
            )

    def gateway_route(
        self,
        r: GatewayHTTPRoute | GatewayGRPCRoute,
        routed: dict[str, VirtualService],
        attached: dict[str, ResourceModel],
    ) -> None:
        """GAMMA: each parentRef is a Service of the route's namespace (not also routed by a
        VirtualService or by the other route kind); backends are Services with that port."""
        for i, p in enumerate(r.spec.parent_refs):
            loc: Loc = ("spec", "parentRefs", i)
            if p.namespace is not None and p.namespace != r.namespace:
                self.err(
                    r,
                    (*loc, "namespace"),
                    f'attaching to a Service in namespace "{p.namespace}" from namespace '
                    f'"{r.namespace}" (a consumer route) is not supported by hyphal: put the '
                    f'route in namespace "{p.namespace}"',
                )
                continue
            svc = self.service_named(r, (*loc, "name"), p.name, r.namespace)
            if svc is None:
                continue
            fqdn = f"{svc.name}.{svc.namespace}.svc.{self.domain}"
            ports = [sp for sp in svc.spec.ports if p.port in (None, sp.port)]
            ports = [sp for sp in ports if p.section_name in (None, sp.name)]
            if not ports:
                what = f"port {p.port}" if p.port is not None else f"port {p.section_name!r}"
                field_ = "port" if p.port is not None else "sectionName"
                self.err(r, (*loc, field_), f'Service "{svc.name}" has no {what}')
                continue
            if not any(sp.protocol != "TCP" for sp in ports):
                self.err(r, loc, f'Service "{svc.name}" has no HTTP, HTTP2 or GRPC port here')
            vs = routed.get(fqdn)
            if vs is not None:
                self.err(
                    r,
                    loc,
                    f"{fqdn} is already routed by VirtualService {vs.namespace}/{vs.name} (one "
                    "source of truth per host: use a VirtualService or Gateway API routes)",
                )
            other = attached.setdefault(fqdn, r)
            if other.kind != r.kind:
                self.err(
                    r,
                    loc,
                    f"{fqdn} already has {other.kind} {other.namespace}/{other.name}; "
                    f"{r.kind}s and {other.kind}s are not merged (use one kind per Service)",
                )
        for loc, ref in r.backend_references():
            self.backend_ref(r, loc, ref)
        for loc, pattern in r.regexes():
            problem = re2_problem(pattern)
            if problem:
                self.err(r, loc, problem)

    def authorization_policy(self, ap: AuthorizationPolicy) -> None:
        for i, rule in enumerate(ap.spec.rules):
            for j, f in enumerate(rule.from_):
                loc: Loc = ("spec", "rules", i, "from", j, "source")
                for name, vals in (
                    ("principals", f.source.principals),
                    ("notPrincipals", f.source.not_principals),
                ):
                    for k, v in enumerate(vals):
                        self.principal(ap, (*loc, name, k), v)
                for name, vals in (
                    ("ipBlocks", f.source.ip_blocks),
                    ("notIpBlocks", f.source.not_ip_blocks),
                ):
                    for k, v in enumerate(vals):
                        try:
                            ipaddress.ip_network(v, strict=False)
                        except ValueError:
                            self.err(ap, (*loc, name, k), f"{v!r} is not an IP address or CIDR")
            for j, c in enumerate(rule.when):
                if c.key == "source.principal":
                    for name, vals in (("values", c.values), ("notValues", c.not_values)):
                        for k, v in enumerate(vals):
                            self.principal(ap, ("spec", "rules", i, "when", j, name, k), v)

    def rate_limit_policy(self, rl: RateLimitPolicy) -> None:
        ref = rl.spec.target_ref
        if ref is None:
            return
        loc: Loc = ("spec", "targetRef", "name")
        if ref.kind == "Service":
            self.service_named(rl, loc, ref.name, rl.namespace)
        elif not any(w.name == ref.name and w.namespace == rl.namespace for w in self.rs.workloads):
            self.err(rl, loc, f'no Workload "{ref.name}" in namespace "{rl.namespace}"')

    def principal(self, r: ResourceModel, loc: Loc, value: str) -> None:
        if value != "*" and not _PRINCIPAL.match(value):
            hint = " (without spiffe://)" if value.startswith("spiffe://") else ""
            self.err(
                r,
                loc,
                f"{value!r} is not a principal: write "
                f"<trust-domain>/ns/<namespace>/sa/<service-account>{hint}, or *",
            )

    def run(self) -> list[ConfigError]:
        self.index()
        for svc in self.rs.services:
            self.service(svc)
        routed: dict[str, VirtualService] = {}
        for vs in self.rs.virtual_services:
            self.virtual_service(vs, routed)
        attached: dict[str, ResourceModel] = {}
        routes: list[GatewayHTTPRoute | GatewayGRPCRoute] = [
            *self.rs.http_routes,
            *self.rs.grpc_routes,
        ]
        for route in routes:
            self.gateway_route(route, routed, attached)
        ruled: dict[str, DestinationRule] = {}
        for dr in self.rs.destination_rules:
            self.destination_rule(dr, ruled)
        for ap in self.rs.authorization_policies:
            self.authorization_policy(ap)
        for rl in self.rs.rate_limit_policies:
            self.rate_limit_policy(rl)
        return self.errors


def validate(rs: ResourceSet, domain: str = "cluster.local") -> list[ConfigError]:
    """Every cross-resource problem in `rs` ([] when it is consistent)."""
    return _Checker(rs, domain).run()
