"""Compile a RouteConfiguration (and its HTTPFault per-filter configs) into a RouteTable."""

from __future__ import annotations

import re
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import any_pb2

from hyphal.proxy.compile.common import (
    Where,
    fraction,
    header_matcher,
    headers_to_add,
    join,
    lower_names,
    seconds,
    string_match,
)
from hyphal.proxy.compile.types import ROUTE
from hyphal.proxy.runtime.tables import (
    ClusterAction,
    DirectResponse,
    FaultSpec,
    HashPolicy,
    HeaderMatcher,
    MirrorPolicy,
    PathKind,
    PathMatch,
    QueryMatcher,
    RedirectAction,
    RegexRewrite,
    RetryPolicy,
    Route,
    RouteAction,
    RouteMatch,
    RouteTable,
    StringKind,
    StringMatch,
    VirtualHost,
    WeightedCluster,
)

FAULT_FILTER = "envoy.filters.http.fault"
DEFAULT_TIMEOUT_S = 15.0  # Envoy's route timeout when none is given

_RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "connect-failure",
        "refused-stream",
        "retriable-4xx",
        "retriable-status-codes",
        "unavailable",
        "cancelled",
        "deadline-exceeded",
        "resource-exhausted",
        "internal",
        "envoy-ratelimited",
        "reset-before-request",
        "http3-post-connect-failure",
        "retriable-headers",
    }
)


def compile_route_configuration(rcfg: route_pb2.RouteConfiguration) -> RouteTable:
    """A RouteConfiguration resource (RDS) as a RouteTable; raises CompileError."""
    return route_table(rcfg, Where(ROUTE, rcfg.name), "")


def route_table(rcfg: route_pb2.RouteConfiguration, where: Where, path: str) -> RouteTable:
    """Also used for a Listener's inline `route_config` (errors then point into the Listener)."""
    where.only(
        rcfg,
        {
            "name",
            "virtual_hosts",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "validate_clusters",
        },
        path,
    )
    # RouteConfiguration-level header edits apply to every virtual host, after its own.
    req_add = headers_to_add(
        rcfg.request_headers_to_add, where, join(path, "request_headers_to_add")
    )
    resp_add = headers_to_add(
        rcfg.response_headers_to_add, where, join(path, "response_headers_to_add")
    )
    req_rm = lower_names(rcfg.request_headers_to_remove)
    resp_rm = lower_names(rcfg.response_headers_to_remove)
    vhosts = []
    for i, vh in enumerate(rcfg.virtual_hosts):
        v = virtual_host(vh, where, join(path, f"virtual_hosts[{i}]"))
        if req_add or resp_add or req_rm or resp_rm:
            v = VirtualHost(
                v.name,
                v.domains,
                v.routes,
                v.request_headers_to_add + req_add,
                v.request_headers_to_remove + req_rm,
                v.response_headers_to_add + resp_add,
                v.response_headers_to_remove + resp_rm,
                v.retry,
            )
        vhosts.append(v)
    try:
        return RouteTable.build(rcfg.name, tuple(vhosts))
    except ValueError as exc:
        raise where.error(join(path, "virtual_hosts"), str(exc)) from None


def virtual_host(vh: rc.VirtualHost, where: Where, path: str) -> VirtualHost:
    where.only(
        vh,
        {
            "name",
            "domains",
            "routes",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "retry_policy",
        },
        path,
    )
    if not vh.domains:
        raise where.error(join(path, "domains"), "a virtual host needs at least one domain")
    retry = (
        retry_policy(vh.retry_policy, where, join(path, "retry_policy"))
        if vh.HasField("retry_policy")
        else None
    )
    routes = tuple(
        route(r, where, join(path, f"routes[{i}]"), retry) for i, r in enumerate(vh.routes)
    )
    return VirtualHost(
        name=vh.name,
        domains=tuple(d.lower() for d in vh.domains),
        routes=routes,
        request_headers_to_add=headers_to_add(
            vh.request_headers_to_add, where, join(path, "request_headers_to_add")
        ),
        request_headers_to_remove=lower_names(vh.request_headers_to_remove),
        response_headers_to_add=headers_to_add(
            vh.response_headers_to_add, where, join(path, "response_headers_to_add")
        ),
        response_headers_to_remove=lower_names(vh.response_headers_to_remove),
        retry=retry,
    )


def route(r: rc.Route, where: Where, path: str, vhost_retry: RetryPolicy | None) -> Route:
    where.only(
        r,
        {
            "name",
            "match",
            "route",
            "redirect",
            "direct_response",
            "typed_per_filter_config",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "metadata",
            "decorator",
        },
        path,
    )
    match = route_match(r.match, where, join(path, "match"))
    fault = None
    for fname, cfg in r.typed_per_filter_config.items():
        fpath = join(path, f"typed_per_filter_config[{fname!r}]")
        if fname != FAULT_FILTER:
            raise where.error(fpath, "only envoy.filters.http.fault is supported per route")
        fault = http_fault(cfg, where, fpath)
    common = {
        "name": r.name,
        "match": match,
        "request_headers_to_add": headers_to_add(
            r.request_headers_to_add, where, join(path, "request_headers_to_add")
        ),
        "request_headers_to_remove": lower_names(r.request_headers_to_remove),
        "response_headers_to_add": headers_to_add(
            r.response_headers_to_add, where, join(path, "response_headers_to_add")
        ),
        "response_headers_to_remove": lower_names(r.response_headers_to_remove),
        "fault": fault,
    }
    kind = r.WhichOneof("action")
    if kind == "redirect":
        return Route(
            action=redirect(r.redirect, where, join(path, "redirect")), timeout_s=None, **common
        )
    if kind == "direct_response":
        d = r.direct_response
        where.only(d, {"status", "body"}, join(path, "direct_response"))
        body_kind = d.body.WhichOneof("specifier")
        if body_kind not in (None, "inline_string", "inline_bytes"):
            raise where.error(
                join(path, "direct_response.body"), "only inline bodies are supported"
            )
        body = d.body.inline_bytes if body_kind == "inline_bytes" else d.body.inline_string.encode()
        act: RouteAction = DirectResponse(d.status, body)
        return Route(action=act, timeout_s=None, **common)
    if kind != "route":
        raise where.error(path, "a route needs route, redirect or direct_response")
    a = r.route
    apath = join(path, "route")
    where.only(
        a,
        {
            "cluster",
            "weighted_clusters",
            "timeout",
            "retry_policy",
            "prefix_rewrite",
            "regex_rewrite",
            "host_rewrite_literal",
            "request_mirror_policies",
            "hash_policy",
        },
        apath,
    )
    return Route(
        action=cluster_action(a, where, apath),
        timeout_s=(seconds(a.timeout) or None) if a.HasField("timeout") else DEFAULT_TIMEOUT_S,
        retry=retry_policy(a.retry_policy, where, join(apath, "retry_policy"))
        if a.HasField("retry_policy")
        else vhost_retry,
        prefix_rewrite=a.prefix_rewrite or None,
        regex_rewrite=regex_rewrite(a, where, apath),
        host_rewrite=a.host_rewrite_literal or None,
        mirrors=tuple(
            mirror(m, where, join(apath, f"request_mirror_policies[{i}]"))
            for i, m in enumerate(a.request_mirror_policies)
        ),
        hash_policy=tuple(
            hash_policy(h, where, join(apath, f"hash_policy[{i}]"))
            for i, h in enumerate(a.hash_policy)
        ),
        **common,
    )


def route_match(m: rc.RouteMatch, where: Where, path: str) -> RouteMatch:
    where.only(
        m,
        {"prefix", "path", "safe_regex", "case_sensitive", "headers", "query_parameters", "grpc"},
        path,
    )
    cs = m.case_sensitive.value if m.HasField("case_sensitive") else True
    kind = m.WhichOneof("path_specifier")
    try:
        if kind == "prefix":
            pm = PathMatch(PathKind.PREFIX, m.prefix, cs)
        elif kind == "path":
            pm = PathMatch(PathKind.EXACT, m.path, cs)
        elif kind == "safe_regex":
            pm = PathMatch(PathKind.REGEX, m.safe_regex.regex, cs)
        else:
            raise where.error(path, "a route match needs prefix, path or safe_regex")
    except ValueError as exc:
        raise where.error(join(path, "safe_regex.regex"), str(exc)) from None
    methods: frozenset[str] | None = None
    headers: list[HeaderMatcher] = []
    for i, h in enumerate(m.headers):
        hm = header_matcher(h, where, join(path, f"headers[{i}]"))
        sm = hm.match
        if (
            hm.name == ":method"
            and sm is not None
            and sm.kind is StringKind.EXACT
            and not hm.invert
            and not sm.ignore_case
            and methods is None
        ):
            methods = frozenset({sm.value})  # fast path: no header dict needed
        else:
            headers.append(hm)
    if m.HasField("grpc"):
        headers.append(
            HeaderMatcher("content-type", StringMatch(StringKind.PREFIX, "application/grpc"))
        )
    query = []
    for i, q in enumerate(m.query_parameters):
        qpath = join(path, f"query_parameters[{i}]")
        where.only(q, {"name", "string_match", "present_match"}, qpath)
        sm2 = (
            string_match(q.string_match, where, join(qpath, "string_match"))
            if q.HasField("string_match")
            else None
        )
        query.append(QueryMatcher(q.name, sm2))
    return RouteMatch(pm, tuple(headers), tuple(query), methods)


def cluster_action(a: rc.RouteAction, where: Where, path: str) -> ClusterAction:
    kind = a.WhichOneof("cluster_specifier")
    if kind == "cluster":
        if not a.cluster:
            raise where.error(join(path, "cluster"), "empty cluster name")
        return ClusterAction.single(a.cluster)
    if kind != "weighted_clusters":
        raise where.error(path, "a route action needs cluster or weighted_clusters")
    wpath = join(path, "weighted_clusters")
    where.only(a.weighted_clusters, {"clusters", "total_weight"}, wpath)
    items = []
    for i, cw in enumerate(a.weighted_clusters.clusters):
        cpath = join(wpath, f"clusters[{i}]")
        where.only(
            cw, {"name", "weight", "request_headers_to_add", "request_headers_to_remove"}, cpath
        )
        if not cw.name:
            raise where.error(join(cpath, "name"), "empty cluster name")
        items.append(
            WeightedCluster(
                cw.name,
                cw.weight.value,
                headers_to_add(
                    cw.request_headers_to_add, where, join(cpath, "request_headers_to_add")
                ),
                lower_names(cw.request_headers_to_remove),
            )
        )
    try:
        return ClusterAction(tuple(items))
    except ValueError as exc:
        raise where.error(wpath, str(exc)) from None


def retry_policy(p: rc.RetryPolicy, where: Where, path: str) -> RetryPolicy:
    where.only(
        p,
        {
            "retry_on",
            "num_retries",
            "per_try_timeout",
            "retriable_status_codes",
            "retry_back_off",
            "retry_host_predicate",
            "host_selection_retry_max_attempts",
        },
        path,
    )
    for i, pred in enumerate(p.retry_host_predicate):
        # Picking a host other than the failed one is what hyphal's balancer does anyway.
        if pred.name != "envoy.retry_host_predicates.previous_hosts":
            raise where.error(
                join(path, f"retry_host_predicate[{i}]"),
                f"{pred.name!r} is not supported (only previous_hosts)",
            )
    on = frozenset(s.strip() for s in p.retry_on.split(",") if s.strip())
    bad = sorted(on - _RETRY_ON)
    if bad:
        raise where.error(join(path, "retry_on"), f"unknown retry condition(s) {', '.join(bad)}")
    base = seconds(p.retry_back_off.base_interval) if p.HasField("retry_back_off") else 0.025
    maxi = (
        seconds(p.retry_back_off.max_interval)
        if p.retry_back_off.HasField("max_interval")
        else base * 10
    )
    if base <= 0:
        raise where.error(join(path, "retry_back_off.base_interval"), "must be > 0")
    return RetryPolicy(
        num_retries=p.num_retries.value if p.HasField("num_retries") else 1,
        per_try_timeout_s=seconds(p.per_try_timeout) or None,
        retry_on=on,
        retriable_status_codes=frozenset(p.retriable_status_codes),
        base_interval_s=base,
        max_interval_s=max(maxi, base),
    )


def regex_rewrite(a: rc.RouteAction, where: Where, path: str) -> RegexRewrite | None:
    if not a.HasField("regex_rewrite"):
        return None
    rr = a.regex_rewrite
    try:
        pattern = re.compile(rr.pattern.regex)
    except re.error as exc:
        raise where.error(
            join(path, "regex_rewrite.pattern.regex"), f"invalid regex {rr.pattern.regex!r}: {exc}"
        ) from None
    # RE2 substitutions use \1; Python's re.sub accepts the same form.
    return RegexRewrite(pattern, rr.substitution)


def mirror(m: rc.RouteAction.RequestMirrorPolicy, where: Where, path: str) -> MirrorPolicy:
    where.only(m, {"cluster", "runtime_fraction"}, path)
    if not m.cluster:
        raise where.error(join(path, "cluster"), "a mirror policy needs a cluster")
    frac = 1.0
    if m.HasField("runtime_fraction"):
        frac = fraction(m.runtime_fraction.default_value)
    return MirrorPolicy(m.cluster, frac)


def hash_policy(h: rc.RouteAction.HashPolicy, where: Where, path: str) -> HashPolicy:
    kind = h.WhichOneof("policy_specifier")
    if kind == "header":
        return HashPolicy(header=h.header.header_name.lower())
    if kind == "cookie":
        where.only(h.cookie, {"name", "ttl", "path"}, join(path, "cookie"))
        ttl = seconds(h.cookie.ttl) if h.cookie.HasField("ttl") else None
        return HashPolicy(cookie=h.cookie.name, cookie_ttl_s=ttl or None,
                          cookie_path=h.cookie.path or "/")
    if kind == "query_parameter":
        return HashPolicy(query_parameter=h.query_parameter.name)
    if kind == "connection_properties" and h.connection_properties.source_ip:
        return HashPolicy(source_ip=True)
    raise where.error(path, f"hash policy {kind!r} is not supported")


def redirect(r: rc.RedirectAction, where: Where, path: str) -> RedirectAction:
    where.only(
        r,
        {
            "https_redirect",
            "scheme_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "response_code",
            "strip_query",
        },
        path,
    )
    codes = {
        rc.RedirectAction.MOVED_PERMANENTLY: 301,
        rc.RedirectAction.FOUND: 302,
        rc.RedirectAction.SEE_OTHER: 303,
        rc.RedirectAction.TEMPORARY_REDIRECT: 307,
        rc.RedirectAction.PERMANENT_REDIRECT: 308,
    }
    scheme = "https" if r.https_redirect else (r.scheme_redirect or None)
    return RedirectAction(
        scheme=scheme,
        host=r.host_redirect or None,
        port=r.port_redirect or None,
        path=r.path_redirect or None,
        prefix_rewrite=r.prefix_rewrite or None,
        status=codes[r.response_code],
        strip_query=r.strip_query,
    )


def http_fault(cfg: any_pb2.Any, where: Where, path: str) -> FaultSpec:
    f = where.unpack(cfg, fault_pb2.HTTPFault, path)
    where.only(f, {"delay", "abort"}, path)
    spec: dict[str, Any] = {}
    if f.HasField("delay"):
        dpath = join(path, "delay")
        where.only(f.delay, {"fixed_delay", "percentage"}, dpath)
        if not f.delay.HasField("fixed_delay"):
            raise where.error(dpath, "only fixed_delay is supported")
        spec["delay_s"] = seconds(f.delay.fixed_delay)
        spec["delay_fraction"] = fraction(f.delay.percentage)
    if f.HasField("abort"):
        apath = join(path, "abort")
        where.only(f.abort, {"http_status", "grpc_status", "percentage"}, apath)
        kind = f.abort.WhichOneof("error_type")
        if kind == "http_status":
            if not 200 <= f.abort.http_status < 600:
                raise where.error(join(apath, "http_status"), "must be in [200, 600)")
            spec["abort_status"] = f.abort.http_status
        elif kind == "grpc_status":
            spec["abort_grpc_status"] = f.abort.grpc_status
        else:
            raise where.error(apath, "an abort needs http_status or grpc_status")
        spec["abort_fraction"] = fraction(f.abort.percentage)
    return FaultSpec(**spec)
