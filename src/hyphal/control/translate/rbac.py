"""RBAC builders: Istio AuthorizationPolicies selecting a workload -> Envoy `config.rbac.v3.RBAC`.

Semantics follow Istio: a rule matches when all of from/to/when match, each list when any of
its entries does, each entry when all its fields do, a field when any value does; `notX`
fields must match none. Rules that cannot be enforced on a TCP port (HTTP-only fields) are
dropped from ALLOW policies (they match nothing) and have those fields removed in DENY
policies (they match more): both fail closed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from hyphal.config.models.security import (
    AuthorizationPolicy,
    Condition,
    Operation,
    PeerSource,
    Rule,
)
from hyphal.control.translate import naming
from hyphal.control.translate.pb import (
    Message,
    address_pb2,
    metadata_matcher_pb2,
    path_pb2,
    rbac_pb2,
    regex_pb2,
    route_components_pb2,
    string_pb2,
    u32,
)

Principal = rbac_pb2.Principal
Permission = rbac_pb2.Permission


def _regex(pattern: str) -> Message:
    return regex_pb2.RegexMatcher(google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex=pattern)


def glob_matcher(value: str) -> Message:
    """Istio's value forms: `*` (any non-empty), `prefix*`, `*suffix`, or exact."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=_regex(".+"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=value[:-1])
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:])
    return string_pb2.StringMatcher(exact=value)


def principal_id(value: str) -> Message:
    """A peer principal (`td/ns/x/sa/y`, globbed) matched on the verified URI SAN."""
    if value == "*":
        m = string_pb2.StringMatcher(safe_regex=_regex(".+"))
    else:
        m = glob_matcher(naming.principal_to_spiffe(value) if not value.startswith("*") else value)
    return Principal(authenticated=Principal.Authenticated(principal_name=m))


def namespace_id(value: str) -> Message:
    """A peer namespace, matched on the principal (`spiffe://<td>/ns/<ns>/sa/<sa>`)."""
    if value == "*":
        pattern = r"spiffe://[^/]+/ns/[^/]+/sa/.+"
    elif value.endswith("*"):
        pattern = rf"spiffe://[^/]+/ns/{re.escape(value[:-1])}[^/]*/sa/.+"
    elif value.startswith("*"):
        pattern = rf"spiffe://[^/]+/ns/[^/]*{re.escape(value[1:])}/sa/.+"
    else:
        pattern = rf"spiffe://[^/]+/ns/{re.escape(value)}/sa/.+"
    m = string_pb2.StringMatcher(safe_regex=_regex(pattern))
    return Principal(authenticated=Principal.Authenticated(principal_name=m))


AUTHN_METADATA = "istio_authn"  # Istio's metadata namespace for request authentication


def request_auth_id(path: Sequence[str], value: str, *, as_list: bool = False) -> Message:
    """A match on the verified JWT (Istio's `istio_authn` metadata): `path` is
    `request.auth.principal`, `request.auth.audiences` or `request.auth.claims`, <name>..."""
    vm = metadata_matcher_pb2.MetadataMatcher
    matcher = vm(filter=AUTHN_METADATA, path=[vm.PathSegment(key=k) for k in path])
    if as_list:
        matcher.value.list_match.one_of.string_match.CopyFrom(glob_matcher(value))
    else:
        matcher.value.string_match.CopyFrom(glob_matcher(value))
    return Principal(metadata=matcher)


def request_principal_id(value: str) -> Message:
    """`requestPrincipals` / `request.auth.principal`: `<iss>/<sub>`, globbed."""
    return request_auth_id(("request.auth.principal",), value)


def _cidr(block: str) -> Message:
    ip, _, plen = block.partition("/")
    bits = int(plen) if plen else (128 if ":" in ip else 32)
    return address_pb2.CidrRange(address_prefix=ip, prefix_len=u32(bits))


def _or_ids(ids: Sequence[Message]) -> Message:
    return ids[0] if len(ids) == 1 else Principal(or_ids=Principal.Set(ids=list(ids)))


def _and_ids(ids: Sequence[Message]) -> Message:
    if not ids:
        return Principal(any=True)
    return ids[0] if len(ids) == 1 else Principal(and_ids=Principal.Set(ids=list(ids)))


def _or_rules(rules: Sequence[Message]) -> Message:
    return rules[0] if len(rules) == 1 else Permission(or_rules=Permission.Set(rules=list(rules)))


def _and_rules(rules: Sequence[Message]) -> Message:
    if not rules:
        return Permission(any=True)
    return rules[0] if len(rules) == 1 else Permission(and_rules=Permission.Set(rules=list(rules)))


def _header_id(name: str, value: str) -> Message:
    return Principal(
        header=route_components_pb2.HeaderMatcher(name=name, string_match=glob_matcher(value))
    )


def _header_perm(name: str, value: str) -> Message:
    return Permission(
        header=route_components_pb2.HeaderMatcher(name=name, string_match=glob_matcher(value))
    )


def _path_perm(value: str) -> Message:
    return Permission(url_path=path_pb2.PathMatcher(path=glob_matcher(value)))


def source_principal(src: PeerSource, *, tcp: bool = False) -> Message:
    """One `from[].source`: all its fields must hold (request principals, HTTP-only, are
    left out when `tcp`)."""
    fields: list[Message] = []
    request_principals = ((), ()) if tcp else (src.request_principals,
                                                src.not_request_principals)
    pairs = (
        (src.principals, src.not_principals, principal_id),
        (*request_principals, request_principal_id),
        (src.namespaces, src.not_namespaces, namespace_id),
        (src.ip_blocks, src.not_ip_blocks, lambda b: Principal(direct_remote_ip=_cidr(b))),
    )
    for values, not_values, make in pairs:
        if values:
            fields.append(_or_ids([make(v) for v in values]))
        if not_values:
            fields.append(Principal(not_id=_or_ids([make(v) for v in not_values])))
    return _and_ids(fields)


def operation_permission(op: Operation, *, tcp: bool) -> Message:
    """One `to[].operation`: all its fields must hold (HTTP-only fields skipped when `tcp`)."""
    fields: list[Message] = []

    def add(values: Sequence[Message], not_values: Sequence[Message]) -> None:
        if values:
            fields.append(_or_rules(values))
        if not_values:
            fields.append(Permission(not_rule=_or_rules(not_values)))

    add(
        [Permission(destination_port=p) for p in op.ports],
        [Permission(destination_port=p) for p in op.not_ports],
    )
    if not tcp:
        add(
            [_header_perm(":authority", h) for h in op.hosts],
            [_header_perm(":authority", h) for h in op.not_hosts],
        )
        add(
            [_header_perm(":method", m) for m in op.methods],
            [_header_perm(":method", m) for m in op.not_methods],
        )
        add([_path_perm(p) for p in op.paths], [_path_perm(p) for p in op.not_paths])
    return _and_rules(fields)


def _http_only(rule: Rule) -> bool:
    ops = [t.operation for t in rule.to]
    if any(
        o.hosts or o.not_hosts or o.methods or o.not_methods or o.paths or o.not_paths for o in ops
    ):
        return True
    if any(f.source.request_principals or f.source.not_request_principals for f in rule.from_):
        return True
    return any(c.http_only for c in rule.when)


def _condition_id(c: Condition) -> Message:
    header = c.header_name or ""

    def make(v: str) -> Message:
        if c.key == "source.principal":
            return principal_id(v)
        if c.key == "source.namespace":
            return namespace_id(v)
        if c.key == "request.auth.principal":
            return request_principal_id(v)
        if c.key == "request.auth.audiences":
            return request_auth_id(("request.auth.audiences",), v, as_list=True)
        claim = c.claim_path
        if claim is not None:
            return request_auth_id(("request.auth.claims", *claim), v, as_list=True)
        return _header_id(header, v)

    fields: list[Message] = []
    if c.values:
        fields.append(_or_ids([make(v) for v in c.values]))
    if c.not_values:
        fields.append(Principal(not_id=_or_ids([make(v) for v in c.not_values])))
    return _and_ids(fields)


def rule_policy(rule: Rule, *, tcp: bool) -> Message:
    """One Istio rule -> one Envoy Policy (permissions: the `to`s; principals: `from` + `when`)."""
    principals: list[Message] = []
    if rule.from_:
        principals.append(_or_ids([source_principal(f.source, tcp=tcp) for f in rule.from_]))
    if not tcp:
        principals += [_condition_id(c) for c in rule.when]
    else:
        principals += [_condition_id(c) for c in rule.when if not c.http_only]
    permission = (
        _or_rules([operation_permission(t.operation, tcp=tcp) for t in rule.to])
        if rule.to
        else Permission(any=True)
    )
    return rbac_pb2.Policy(permissions=[permission], principals=[_and_ids(principals)])


def build_rbac(
    policies: Iterable[AuthorizationPolicy], action: str, *, tcp: bool
) -> Message | None:
    """The RBAC for all `action` (ALLOW / DENY) policies, or None when none applies.

    An ALLOW policy with no rules adds no Envoy policy: the filter then denies everything.
    """
    selected = [p for p in policies if p.spec.action == action]
    if not selected:
        return None
    rbac = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW if action == "ALLOW" else rbac_pb2.RBAC.DENY)
    rbac.SetInParent()
    for p in sorted(selected, key=lambda p: (p.namespace, p.name)):
        for i, rule in enumerate(p.spec.rules):
            if tcp and action == "ALLOW" and _http_only(rule):
                continue  # cannot be checked on TCP: it allows nothing
            name = f"ns[{p.namespace}]-policy[{p.name}]-rule[{i}]"
            rbac.policies[name].CopyFrom(rule_policy(rule, tcp=tcp))
    return rbac


def selects(policy: AuthorizationPolicy, namespace: str, labels: dict[str, str]) -> bool:
    """Whether `policy` applies to a workload (own namespace, or mesh-wide from the root one)."""
    if policy.namespace not in (namespace, naming.ROOT_NAMESPACE):
        return False
    sel = policy.spec.selector
    if sel is None or not sel.match_labels:
        return True
    return all(labels.get(k) == v for k, v in sel.match_labels.items())
