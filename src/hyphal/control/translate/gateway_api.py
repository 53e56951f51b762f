"""GAMMA routes -> Envoy routes: HTTPRoute/GRPCRoute rules attached to a Service, in spec order.

Every (rule, match) pair becomes an Istio-shaped route handed to the builders the
VirtualService path uses (`routes.build_routes`), so both produce the same Envoy shapes. The
pairs of all routes attached to one Service port are merged into one list, sorted by the
Gateway API precedence (HTTPRoute: exact path, then regular expression, then the longest
prefix; then method, most headers, most query params; GRPCRoute: longest service, longest
method, most headers; ties: route namespace/name, then rule and match order). The few things
Istio's shape cannot say (a full-path rewrite, a prefix redirect, a retry backoff) are set on
the built message afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hyphal.config.models.gateway_api import (
    BackendObjectReference,
    GatewayGRPCRoute,
    GatewayHTTPRoute,
    GRPCRouteFilter,
    GRPCRouteMatch,
    HTTPHeaderFilter,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
)
from hyphal.config.models.virtual_service import (
    Destination,
    HeaderOperations,
    Headers,
    HTTPMatchRequest,
    HTTPMirrorPolicy,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRoute,
    HTTPRouteDestination,
    Percentage,
    PortSelector,
    StringMatch,
)
from hyphal.control.translate import naming
from hyphal.control.translate.inputs import MeshIndex, ServiceInfo
from hyphal.control.translate.pb import Message, duration, route_components_pb2, u32
from hyphal.control.translate.routes import (
    DEFAULT_ATTEMPTS,
    HashPolicies,
    build_routes,
    regex_matcher,
)

__all__ = ["GammaRoute", "attached_routes", "mesh_routes"]

GammaRoute = GatewayHTTPRoute | GatewayGRPCRoute

# Gateway API: "implementations SHOULD retry on connection errors if a retry stanza is set".
CONNECTION_ERRORS = "connect-failure,refused-stream,reset"


@dataclass(frozen=True, slots=True)
class _Patch:
    """What is set on a built Route after the shared builder ran."""

    full_path: str | None = None  # URLRewrite ReplaceFullPath
    redirect_path: str | None = None  # RequestRedirect path on an exact route
    redirect_prefix: str | None = None  # RequestRedirect ReplacePrefixMatch on a prefix route
    backoff: timedelta | None = None
    per_try_without_retries: timedelta | None = None  # attempts 0 + backendRequest

    def apply(self, r: Message) -> None:
        if r.HasField("redirect"):
            if self.redirect_path is not None:
                r.redirect.path_redirect = self.redirect_path
            if self.redirect_prefix is not None:
                r.redirect.prefix_rewrite = self.redirect_prefix
            return
        action = r.route
        if self.full_path is not None:
            action.regex_rewrite.pattern.CopyFrom(regex_matcher("^/.*$"))
            action.regex_rewrite.substitution = self.full_path
        if self.backoff is not None and action.HasField("retry_policy"):
            action.retry_policy.retry_back_off.base_interval.CopyFrom(
                duration(self.backoff.total_seconds())
            )
        if self.per_try_without_retries is not None:
            action.retry_policy.CopyFrom(
                route_components_pb2.RetryPolicy(
                    num_retries=u32(0),
                    per_try_timeout=duration(self.per_try_without_retries.total_seconds()),
                )
            )


@dataclass(frozen=True, slots=True)
class _Entry:
    """One Envoy-route-to-be: its precedence key, the Istio-shaped route and match, a patch."""

    key: tuple[Any, ...]
    route: HTTPRoute
    match: HTTPMatchRequest
    patch: _Patch


def attached_routes(index: MeshIndex, svc: ServiceInfo, port: int) -> list[GammaRoute]:
    """Routes whose parentRefs name `svc` on `port` (or on all its ports), by namespace/name."""
    if not svc.mesh:
        return []
    info = svc.port(port)
    out: list[GammaRoute] = []
    candidates: list[GammaRoute] = [*index.http_routes, *index.grpc_routes]
    for r in candidates:
        if r.namespace != svc.namespace:
            continue
        for p in r.spec.parent_refs:
            if (
                p.name == svc.name
                and p.namespace in (None, svc.namespace)
                and p.port in (None, port)
                and (p.section_name is None or (info is not None and info.name == p.section_name))
            ):
                out.append(r)
                break
    return sorted(out, key=lambda r: (r.namespace, r.name))


def mesh_routes(
    index: MeshIndex,
    svc: ServiceInfo,
    port: int,
    clusters: Container[str],
    hash_policies: HashPolicies,
) -> list[Message]:
    """Envoy routes for one Service port from the GAMMA routes attached to it ([] if none)."""
    routes = attached_routes(index, svc, port)
    if not routes:
        return []

    def resolve(d: Destination) -> str | None:
        if d.port is None:
            return None
        name = naming.outbound_cluster(d.port.number, "", d.host)
        return name if name in clusters else None

    entries: list[_Entry] = []
    for r in routes:
        for i, rule in enumerate(r.spec.rules):
            if isinstance(r, GatewayHTTPRoute):
                assert isinstance(rule, HTTPRouteRule)
                entries += _http_entries(r, i, rule)
            else:
                entries += _grpc_entries(r, i, rule)
    entries.sort(key=lambda e: e.key)
    out: list[Message] = []
    for e in entries:
        for built in build_routes(e.route, resolve, hash_policies, [e.match]):
            e.patch.apply(built)
            out.append(built)
    return out


# ---- shared pieces ----


def _destination(b: BackendObjectReference, namespace: str) -> Destination:
    return Destination(
        host=naming.service_fqdn(b.name, b.namespace or namespace),
        port=PortSelector(number=b.port),
    )


def _header_ops(f: HTTPHeaderFilter | None) -> HeaderOperations | None:
    if f is None:
        return None
    set_, add, remove = f.as_dicts()
    return HeaderOperations.model_validate({"set": set_, "add": add, "remove": remove})


def _headers(filters: Sequence[HTTPRouteFilter | GRPCRouteFilter]) -> Headers | None:
    req = next((f.request_header_modifier for f in filters if f.request_header_modifier), None)
    resp = next((f.response_header_modifier for f in filters if f.response_header_modifier), None)
    if req is None and resp is None:
        return None
    return Headers(request=_header_ops(req), response=_header_ops(resp))


def _mirrors(
    filters: Sequence[HTTPRouteFilter | GRPCRouteFilter], namespace: str
) -> tuple[HTTPMirrorPolicy, ...]:
    return tuple(
        HTTPMirrorPolicy(
            destination=_destination(f.request_mirror.backend_ref, namespace),
            percentage=Percentage(value=f.request_mirror.mirror_percent),
        )
        for f in filters
        if f.request_mirror is not None
    )


def _string(kind: str, value: str) -> StringMatch:
    return StringMatch(regex=value) if kind == "RegularExpression" else StringMatch(exact=value)


def _route(
    r: GammaRoute,
    i: int,
    rule: Any,
    *,
    redirect: HTTPRedirect | None = None,
    rewrite: HTTPRewrite | None = None,
    timeout: timedelta | None = None,
    retries: HTTPRetry | None = None,
) -> HTTPRoute:
    """The Istio-shaped route for one rule. Built without validation on purpose: Gateway API
    weights are relative (any sum, up to 1,000,000 each), which Istio's model would refuse;
    the builder passes them through to Envoy's weighted_clusters as they are."""
    dests = tuple(
        HTTPRouteDestination.model_construct(
            destination=_destination(b, r.namespace),
            weight=b.weight,
            headers=_headers(b.filters),
        )
        for b in rule.backend_refs
    )
    return HTTPRoute.model_construct(
        name=f"{r.kind}/{r.namespace}/{r.name}.rules[{i}]",
        match=(),
        route=dests,
        redirect=redirect,
        rewrite=rewrite,
        timeout=timeout,
        retries=retries,
        fault=None,
        mirror=None,
        mirrors=_mirrors(rule.filters, r.namespace),
        mirror_percentage=None,
        headers=_headers(rule.filters),
    )


# ---- HTTPRoute ----


def _http_retries(rule: HTTPRouteRule) -> tuple[HTTPRetry | None, _Patch]:
    retry, t = rule.retry, rule.timeouts
    per_try = t.backend_request if t is not None else None
    if per_try is not None and per_try == timedelta(0):
        per_try = None  # 0s: no per-try timeout
    if retry is None and per_try is None:
        return None, _Patch()  # the mesh default (same as a VirtualService without retries)
    attempts = DEFAULT_ATTEMPTS if retry is None or retry.attempts is None else retry.attempts
    retry_on = None
    if retry is not None:
        retry_on = ",".join([CONNECTION_ERRORS, *(str(c) for c in retry.codes)])
    backoff = retry.backoff if retry is not None else None
    if attempts == 0:
        return HTTPRetry(attempts=0), _Patch(per_try_without_retries=per_try)
    istio = HTTPRetry.model_construct(
        attempts=attempts, per_try_timeout=per_try, retry_on=retry_on, retry_remote_localities=None
    )
    return istio, _Patch(backoff=backoff)


def _http_match(m: HTTPRouteMatch | None, j: int | None, uri: StringMatch) -> HTTPMatchRequest:
    return HTTPMatchRequest(
        name=None if j is None else f"matches[{j}]",
        uri=uri,
        method=StringMatch(exact=m.method) if m is not None and m.method else None,
        headers={h.name.lower(): _string(h.type, h.value) for h in (m.unique_headers if m else ())},
        query_params={
            q.name: _string(q.type, q.value) for q in (m.unique_query_params if m else ())
        },
    )


def _http_entries(r: GatewayHTTPRoute, i: int, rule: HTTPRouteRule) -> list[_Entry]:
    retries, retry_patch = _http_retries(rule)
    timeout = rule.timeouts.request if rule.timeouts is not None else None
    red, rew = rule.redirect, rule.rewrite
    out: list[_Entry] = []
    listed: Sequence[tuple[int | None, HTTPRouteMatch | None]] = (
        list(enumerate(rule.matches)) if rule.matches else [(None, None)]
    )
    for j, m in listed:
        path = m.effective_path if m is not None else None
        kind = path.type if path is not None else "PathPrefix"
        value = path.value if path is not None else "/"
        # Precedence: exact, then regex, then prefix (longest first); then method, headers,
        # query params; then route namespace/name, rule order, match order.
        prefix = value.rstrip("/") or "/"
        rank = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}[kind]
        key = (
            rank,
            -len(prefix if kind == "PathPrefix" else value),
            0 if m is not None and m.method else 1,
            -len(m.unique_headers) if m else 0,
            -len(m.unique_query_params) if m else 0,
            r.namespace,
            r.name,
            i,
            j or 0,
        )
        # A PathPrefix matches whole path elements: `/abc` is `/abc` exactly or `/abc/...`,
        # never `/abcd` (two Envoy routes, same action).
        if kind == "Exact":
            shapes = [("exact", StringMatch(exact=value))]
        elif kind == "RegularExpression":
            shapes = [("regex", StringMatch(regex=value))]
        elif prefix == "/":
            shapes = [("prefix", StringMatch(prefix="/"))]
        else:
            shapes = [
                ("exact", StringMatch(exact=prefix)),
                ("prefix", StringMatch(prefix=prefix + "/")),
            ]
        for shape, uri in shapes:
            redirect, rewrite, patch = _modifiers(red, rew, shape, kind)
            route = _route(r, i, rule, redirect=redirect, rewrite=rewrite, timeout=timeout,
                           retries=retries)  # fmt: skip
            patch = _Patch(
                full_path=patch.full_path,
                redirect_path=patch.redirect_path,
                redirect_prefix=patch.redirect_prefix,
                backoff=retry_patch.backoff,
                per_try_without_retries=retry_patch.per_try_without_retries,
            )
            out.append(_Entry(key, route, _http_match(m, j, uri), patch))
    return out


def _modifiers(
    red: Any, rew: Any, shape: str, kind: str
) -> tuple[HTTPRedirect | None, HTTPRewrite | None, _Patch]:
    """Redirect/rewrite for one Envoy route shape (`exact`, `prefix` or `regex`)."""

    def replaced(replacement: str) -> str:
        # ReplacePrefixMatch: on `/abc` exactly the whole path becomes the replacement; under
        # `/abc/` the prefix becomes replacement + "/" (the spec's table: "" and "/" -> "/bar").
        if shape == "exact":
            return replacement or "/"
        return replacement.rstrip("/") + "/"

    if red is not None:
        path = red.path
        full = prefix_redirect = exact_path = None
        if path is not None and path.type == "ReplaceFullPath":
            full = path.replace_full_path
        elif path is not None:
            if shape == "exact":
                exact_path = replaced(path.replace_prefix_match or "")
            else:
                prefix_redirect = replaced(path.replace_prefix_match or "")
        redirect = HTTPRedirect(
            uri=full,
            authority=red.hostname,
            port=red.port,
            scheme=red.scheme,
            redirect_code=red.status_code,
        )
        return redirect, None, _Patch(redirect_path=exact_path, redirect_prefix=prefix_redirect)
    if rew is not None:
        uri = None
        patch = _Patch()
        if rew.path is not None and rew.path.type == "ReplaceFullPath":
            patch = _Patch(full_path=rew.path.replace_full_path)
        elif rew.path is not None and kind == "PathPrefix":
            uri = replaced(rew.path.replace_prefix_match or "")
        return None, HTTPRewrite(uri=uri, authority=rew.hostname), patch
    return None, None, _Patch()


# ---- GRPCRoute ----


def _grpc_uri(m: GRPCRouteMatch | None) -> StringMatch:
    """gRPC paths are `/<service>/<method>`."""
    if m is None or m.method is None:
        return StringMatch(prefix="/")
    svc, meth = m.method.service or "", m.method.method or ""
    if m.method.type == "RegularExpression":
        return StringMatch(regex=f"/{svc or '[^/]+'}/{meth or '[^/]+'}")
    if svc and meth:
        return StringMatch(exact=f"/{svc}/{meth}")
    if svc:
        return StringMatch(prefix=f"/{svc}/")
    return StringMatch(regex=f"/[^/]+/{re.escape(meth)}")


def _grpc_entries(r: GatewayGRPCRoute, i: int, rule: Any) -> list[_Entry]:
    out: list[_Entry] = []
    listed: Sequence[tuple[int | None, GRPCRouteMatch | None]] = (
        list(enumerate(rule.matches)) if rule.matches else [(None, None)]
    )
    for j, m in listed:
        method = m.method if m is not None else None
        key = (
            -len(method.service or "") if method else 0,
            -len(method.method or "") if method else 0,
            -len(m.unique_headers) if m else 0,
            r.namespace,
            r.name,
            i,
            j or 0,
        )
        match = HTTPMatchRequest(
            name=None if j is None else f"matches[{j}]",
            uri=_grpc_uri(m),
            headers={
                h.name.lower(): _string(h.type, h.value) for h in (m.unique_headers if m else ())
            },
        )
        out.append(_Entry(key, _route(r, i, rule), match, _Patch()))
    return out
