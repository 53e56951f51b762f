"""Compile Envoy RBAC filters (HTTP and network) into one RbacEngine per listener."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from envoy.config.rbac.v3 import rbac_pb2

from hyphal.proxy.compile.common import Where, header_matcher, join, string_match
from hyphal.proxy.runtime.tables import (
    AndRule,
    AnyRule,
    AuthenticatedRule,
    HeaderRule,
    MetadataRule,
    MethodRule,
    NotRule,
    OrRule,
    PathRule,
    PortRule,
    PrincipalRule,
    RbacEngine,
    RbacPolicy,
    Rule,
    StringKind,
)

_Msg = TypeVar("_Msg")


def _each(build: Callable[[_Msg, Where, str], Rule], items: Iterable[_Msg], w: Where,
          path: str, field: str) -> tuple[Rule, ...]:
    """`build` applied to each of the repeated field `field` at `path`, paths `field[i]`."""
    return tuple(build(r, w, join(path, f"{field}[{i}]")) for i, r in enumerate(items))


def _url_path(m: Any, w: Where, path: str) -> Rule:
    w.only(m, {"path"}, path)
    return PathRule(string_match(m.path, w, join(path, "path")))


def permission(p: rbac_pb2.Permission, w: Where, path: str) -> Rule:
    kind = p.WhichOneof("rule")
    if kind == "any":
        return AnyRule()
    if kind == "and_rules":
        return AndRule(_each(permission, p.and_rules.rules, w, path, "and_rules.rules"))
    if kind == "or_rules":
        return OrRule(_each(permission, p.or_rules.rules, w, path, "or_rules.rules"))
    if kind == "not_rule":
        return NotRule(permission(p.not_rule, w, join(path, "not_rule")))
    if kind == "header":
        hm = header_matcher(p.header, w, join(path, "header"))
        sm = hm.match
        if (
            hm.name == ":method"
            and sm is not None
            and sm.kind is StringKind.EXACT
            and not hm.invert
            and not sm.ignore_case
        ):
            return MethodRule(frozenset({sm.value}))
        return HeaderRule(hm)
    if kind == "url_path":
        return _url_path(p.url_path, w, join(path, "url_path"))
    if kind == "destination_port":
        return PortRule(frozenset({p.destination_port}))
    raise w.error(join(path, str(kind)), "not supported by the hyphal sidecar")


def principal(p: rbac_pb2.Principal, w: Where, path: str) -> Rule:
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return AnyRule()
    if kind == "and_ids":
        return AndRule(_each(principal, p.and_ids.ids, w, path, "and_ids.ids"))
    if kind == "or_ids":
        return OrRule(_each(principal, p.or_ids.ids, w, path, "or_ids.ids"))
    if kind == "not_id":
        return NotRule(principal(p.not_id, w, join(path, "not_id")))
    if kind == "authenticated":
        if not p.authenticated.HasField("principal_name"):
            return AuthenticatedRule()
        return PrincipalRule(
            string_match(
                p.authenticated.principal_name, w, join(path, "authenticated.principal_name")
            )
        )
    if kind == "header":
        return HeaderRule(header_matcher(p.header, w, join(path, "header")))
    if kind == "url_path":
        return _url_path(p.url_path, w, join(path, "url_path"))
    if kind == "metadata":
        return _metadata(p.metadata, w, join(path, "metadata"))
    raise w.error(join(path, str(kind)), "not supported by the hyphal sidecar")


_AUTHN_FILTERS = ("istio_authn", "envoy.filters.http.jwt_authn")
_AUTHN_KEYS = ("request.auth.principal", "request.auth.audiences", "request.auth.claims")


def _metadata(m: Any, w: Where, path: str) -> Rule:
    """A match on the verified JWT (`istio_authn` metadata; see runtime MetadataRule)."""
    w.only(m, {"filter", "path", "value", "invert"}, path)
    if m.filter not in _AUTHN_FILTERS:
        raise w.error(join(path, "filter"), f"{m.filter!r}: only {_AUTHN_FILTERS[0]} metadata "
                      "(the verified JWT) is available to RBAC in the hyphal sidecar")
    keys = tuple(seg.key for seg in m.path)
    if not keys or keys[0] not in _AUTHN_KEYS or (keys[0] != _AUTHN_KEYS[2] and len(keys) > 1):
        raise w.error(join(path, "path"), f"{list(keys)}: use one of {', '.join(_AUTHN_KEYS)} "
                      "(claims followed by the claim's names)")
    value = m.value
    kind = value.WhichOneof("match_pattern")
    if kind == "string_match":
        sm = string_match(value.string_match, w, join(path, "value.string_match"))
    elif kind == "list_match" and value.list_match.one_of.WhichOneof(
            "match_pattern") == "string_match":
        sm = string_match(value.list_match.one_of.string_match, w,
                          join(path, "value.list_match.one_of.string_match"))
    else:
        raise w.error(join(path, "value"), "only string_match or list_match.one_of.string_match "
                      "are supported")
    rule: Rule = MetadataRule(keys, sm)
    return NotRule(rule) if m.invert else rule


def policies(rules: rbac_pb2.RBAC, w: Where, path: str) -> tuple[RbacPolicy, ...]:
    out = []
    for name in sorted(rules.policies):
        pol = rules.policies[name]
        ppath = join(path, f"policies[{name!r}]")
        w.only(pol, {"permissions", "principals"}, ppath)
        perms = OrRule(_each(permission, pol.permissions, w, ppath, "permissions"))
        princ = OrRule(_each(principal, pol.principals, w, ppath, "principals"))
        out.append(RbacPolicy(name, perms, princ))
    return tuple(out)


def engine(filters: Sequence[tuple[rbac_pb2.RBAC | None, str]], w: Where) -> RbacEngine | None:
    """Combine a listener's RBAC filters (in chain order): DENY filters add deny policies,
    at most one ALLOW filter gives the allow list. `(None, path)` is a filter without rules."""
    deny: list[RbacPolicy] = []
    allow: tuple[RbacPolicy, ...] | None = None
    present = False
    for rules, path in filters:
        if rules is None:
            continue
        present = True
        w.only(rules, {"action", "policies"}, path)
        pols = policies(rules, w, path)
        if rules.action == rbac_pb2.RBAC.DENY:
            deny.extend(pols)
        elif rules.action == rbac_pb2.RBAC.ALLOW:
            if allow is not None:
                raise w.error(path, "only one ALLOW rbac filter per listener is supported")
            allow = pols
        else:
            raise w.error(
                join(path, "action"), f"{rbac_pb2.RBAC.Action.Name(rules.action)} is not supported"
            )
    if not present:
        return None
    return RbacEngine(tuple(deny), allow)
