"""RouteConfiguration (RDS) builders: VirtualService HTTP routes -> Envoy routes, and defaults.

Pure functions of one HTTPRoute plus a `resolve` callback that turns an Istio Destination into
an outbound cluster name the snapshot contains (or None: the destination is dropped, so a
route never names a cluster that is not sent).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hyphal.config.models.virtual_service import (
    Destination,
    HeaderOperations,
    Headers,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    StringMatch,
)
from hyphal.control.translate import naming
from hyphal.control.translate.pb import (
    Message,
    base_pb2,
    common_fault_pb2,
    duration,
    fault_pb2,
    pack,
    percent_pb2,
    regex_pb2,
    route_components_pb2,
    route_pb2,
    string_pb2,
    u32,
)

Resolve = Callable[[Destination], "str | None"]
HashPolicies = Callable[[str], Sequence[Message]]

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_ATTEMPTS = 2

_REDIRECT_CODES = {
    301: route_components_pb2.RedirectAction.MOVED_PERMANENTLY,
    302: route_components_pb2.RedirectAction.FOUND,
    303: route_components_pb2.RedirectAction.SEE_OTHER,
    307: route_components_pb2.RedirectAction.TEMPORARY_REDIRECT,
    308: route_components_pb2.RedirectAction.PERMANENT_REDIRECT,
}

GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip


class RouteError(ValueError):
    """A VirtualService route that cannot be expressed; the message names the field."""


def regex_matcher(pattern: str) -> Message:
    return regex_pb2.RegexMatcher(google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex=pattern)


def string_matcher(m: StringMatch, *, ignore_case: bool = False) -> Message:
    if m.exact is not None:
        return string_pb2.StringMatcher(exact=m.exact, ignore_case=ignore_case)
    if m.prefix is not None:
        return string_pb2.StringMatcher(prefix=m.prefix, ignore_case=ignore_case)
    return string_pb2.StringMatcher(safe_regex=regex_matcher(m.value))


def _header(name: str, m: StringMatch, *, invert: bool = False) -> Message:
    return route_components_pb2.HeaderMatcher(
        name=name, string_match=string_matcher(m), invert_match=invert
    )


def route_match(m: HTTPMatchRequest | None) -> Message:
    """One Istio match -> one Envoy RouteMatch (a route's matches are OR'ed as several routes)."""
    out = route_components_pb2.RouteMatch()
    if m is None or m.uri is None:
        out.prefix = "/"
    elif m.uri.exact is not None:
        out.path = m.uri.exact
    elif m.uri.prefix is not None:
        out.prefix = m.uri.prefix
    else:
        out.safe_regex.CopyFrom(regex_matcher(m.uri.value))
    if m is None:
        return out
    if m.ignore_uri_case:
        out.case_sensitive.value = False
    for pseudo, sm in ((":method", m.method), (":authority", m.authority), (":scheme", m.scheme)):
        if sm is not None:
            out.headers.append(_header(pseudo, sm))
    for name, sm in sorted(m.headers.items()):
        out.headers.append(_header(name.lower(), sm))
    for name, sm in sorted(m.without_headers.items()):
        out.headers.append(_header(name.lower(), sm, invert=True))
    for name, sm in sorted(m.query_params.items()):
        out.query_parameters.append(
            route_components_pb2.QueryParameterMatcher(name=name, string_match=string_matcher(sm))
        )
    return out


def retry_policy(retries: HTTPRetry | None) -> Message | None:
    """Istio's retries: unset -> 2 attempts on its default conditions + 503; 0 -> none."""
    if retries is None:
        return route_components_pb2.RetryPolicy(
            retry_on=DEFAULT_RETRY_ON,
            num_retries=u32(DEFAULT_ATTEMPTS),
            retriable_status_codes=[503],
        )
    if retries.attempts == 0:
        return None
    conditions: list[str] = []
    codes: list[int] = []
    for item in retries.retry_on_list or tuple(DEFAULT_RETRY_ON.split(",")):
        if item.isdigit():
            codes.append(int(item))
        elif item not in conditions:
            conditions.append(item)
    if retries.retry_on is None:
        codes = [503]
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    out = route_components_pb2.RetryPolicy(
        retry_on=",".join(conditions),
        num_retries=u32(retries.attempts),
        retriable_status_codes=codes,
    )
    if retries.per_try_timeout is not None:
        out.per_try_timeout.CopyFrom(duration(retries.per_try_timeout.total_seconds()))
    return out


def fractional(pct: float) -> Message:
    """A percentage as FractionalPercent: per hundred when whole, else per million."""
    if float(pct).is_integer():
        return percent_pb2.FractionalPercent(
            numerator=int(pct), denominator=percent_pb2.FractionalPercent.HUNDRED
        )
    return percent_pb2.FractionalPercent(
        numerator=round(pct * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def http_fault(fault: HTTPFaultInjection) -> Message:
    """The per-route `envoy.filters.http.fault` config."""
    out = fault_pb2.HTTPFault()
    if fault.delay is not None:
        out.delay.CopyFrom(
            common_fault_pb2.FaultDelay(
                fixed_delay=duration(fault.delay.fixed_delay.total_seconds()),
                percentage=fractional(fault.delay.fraction_percent),
            )
        )
    if fault.abort is not None:
        a = fault.abort
        abort = fault_pb2.FaultAbort(percentage=fractional(a.fraction_percent))
        if a.http_status is not None:
            abort.http_status = a.http_status
        else:
            code = str(a.grpc_status).upper()
            if code.isdigit():
                abort.grpc_status = int(code)
            elif code in GRPC_CODES:
                abort.grpc_status = GRPC_CODES[code]
            else:
                raise RouteError(f"fault.abort.grpcStatus: {a.grpc_status!r} is not a gRPC status")
        out.abort.CopyFrom(abort)
    return out


def header_options(ops: dict[str, str], *, overwrite: bool) -> list[Message]:
    action = (
        base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        if overwrite
        else base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    )
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k.lower(), value=v), append_action=action
        )
        for k, v in sorted(ops.items())
    ]


def _apply_headers(target: Any, headers: Headers | None) -> None:
    """Fill request/response headers_to_add/remove on a Route or ClusterWeight."""
    if headers is None:
        return
    for side, ops in (("request", headers.request), ("response", headers.response)):
        if ops is None:
            continue
        assert isinstance(ops, HeaderOperations)
        getattr(target, f"{side}_headers_to_add").extend(
            header_options(ops.set_, overwrite=True) + header_options(ops.add, overwrite=False)
        )
        getattr(target, f"{side}_headers_to_remove").extend(h.lower() for h in ops.remove)


def mirror_policy(cluster: str, pct: float | None) -> Message:
    p = route_components_pb2.RouteAction.RequestMirrorPolicy(cluster=cluster)
    p.runtime_fraction.default_value.CopyFrom(fractional(100.0 if pct is None else pct))
    return p


def _redirect(route: HTTPRoute) -> Message:
    r = route.redirect
    assert r is not None
    out = route_components_pb2.RedirectAction(
        response_code=_REDIRECT_CODES.get(r.redirect_code, _REDIRECT_CODES[301])
    )
    if r.uri is not None:
        out.path_redirect = r.uri
    if r.authority is not None:
        out.host_redirect = r.authority
    if r.port is not None:
        out.port_redirect = r.port
    if r.scheme is not None:
        out.scheme_redirect = r.scheme
    return out


def route_action(
    route: HTTPRoute,
    match: HTTPMatchRequest | None,
    resolve: Resolve,
    hash_policies: HashPolicies,
) -> Message | None:
    """The `route` action, or None when no destination of the route is in the snapshot."""
    weighted: list[tuple[str, int, Headers | None]] = []
    for d in route.route:
        cluster = resolve(d.destination)
        if cluster is not None:
            weighted.append((cluster, d.effective_weight, d.headers))
    nonzero = [w for w in weighted if w[1] > 0]
    weighted = nonzero or weighted[:1]
    if not weighted:
        return None
    action = route_components_pb2.RouteAction()
    if len(weighted) == 1 and weighted[0][2] is None:
        action.cluster = weighted[0][0]
    else:
        # Weights sum to 100 as written; Envoy v3 divides by their sum (total_weight is
        # deprecated), so a dropped unknown destination leaves the others' ratios intact.
        for cluster, weight, headers in weighted:
            cw = action.weighted_clusters.clusters.add(name=cluster)
            cw.weight.value = max(1, weight)
            _apply_headers(cw, headers)
    action.timeout.CopyFrom(duration(route.timeout.total_seconds() if route.timeout else 0))
    rp = retry_policy(route.retries)
    if rp is not None:
        action.retry_policy.CopyFrom(rp)
    if route.rewrite is not None:
        if route.rewrite.uri is not None:
            if match is not None and match.uri is not None and match.uri.exact is not None:
                action.regex_rewrite.pattern.CopyFrom(
                    regex_matcher("^" + re.escape(match.uri.exact) + "$")
                )
                action.regex_rewrite.substitution = route.rewrite.uri
            else:
                action.prefix_rewrite = route.rewrite.uri
        if route.rewrite.authority is not None:
            action.host_rewrite_literal = route.rewrite.authority
    mirrors: list[tuple[Destination, float | None]] = []
    if route.mirror is not None:
        pct = route.mirror_percentage.value if route.mirror_percentage is not None else None
        mirrors.append((route.mirror, pct))
    mirrors += [
        (m.destination, m.percentage.value if m.percentage else None) for m in route.mirrors
    ]
    for dest, pct in mirrors:
        mc = resolve(dest)
        if mc is not None:
            action.request_mirror_policies.append(mirror_policy(mc, pct))
    action.hash_policy.extend(hash_policies(weighted[0][0]))
    return action


def build_routes(
    route: HTTPRoute,
    resolve: Resolve,
    hash_policies: HashPolicies,
    matches: Sequence[HTTPMatchRequest | None],
) -> list[Message]:
    """One Envoy Route per selected match of an Istio HTTPRoute (an empty list: match all)."""
    out: list[Message] = []
    for m in matches or (None,):
        r = route_components_pb2.Route(match=route_match(m))
        if route.name:
            r.name = route.name if m is None or not m.name else f"{route.name}.{m.name}"
        if route.redirect is not None:
            r.redirect.CopyFrom(_redirect(route))
        else:
            action = route_action(route, m, resolve, hash_policies)
            if action is None:
                continue
            r.route.CopyFrom(action)
        _apply_headers(r, route.headers)
        if route.fault is not None:
            r.typed_per_filter_config[naming.FAULT_FILTER].CopyFrom(pack(http_fault(route.fault)))
        out.append(r)
    return out


def default_route(cluster: str, hash_policies: Sequence[Message] = ()) -> Message:
    """prefix `/` -> the whole service, no timeout, Istio's default retries."""
    action = route_components_pb2.RouteAction(cluster=cluster, timeout=duration(0))
    rp = retry_policy(None)
    action.retry_policy.CopyFrom(rp)
    action.hash_policy.extend(hash_policies)
    return route_components_pb2.Route(
        name="default", match=route_components_pb2.RouteMatch(prefix="/"), route=action
    )


def virtual_host(name: str, domains: Iterable[str], routes: Iterable[Message]) -> Message:
    return route_components_pb2.VirtualHost(name=name, domains=list(domains), routes=list(routes))


def route_configuration(name: str, vhosts: Iterable[Message]) -> Message:
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=list(vhosts))


def has_fault(rc: Message) -> bool:
    return any(
        naming.FAULT_FILTER in r.typed_per_filter_config
        for vh in rc.virtual_hosts
        for r in vh.routes
    )
