"""Where the general path resumes after the fast path (First), and whether an RBAC engine needs
the request's header map. (What `_route` and `_plan` decide is kept on the exchange itself.)"""

from __future__ import annotations

from hyphal.proxy.http.relay import Outcome
from hyphal.proxy.runtime.rbac import (
    AndRule,
    AnyRule,
    AuthenticatedRule,
    MetadataRule,
    MethodRule,
    NotRule,
    OrRule,
    PathRule,
    PortRule,
    PrincipalRule,
    RbacEngine,
    Rule,
)
from hyphal.proxy.runtime.tables import EndpointSpec

__all__ = ["First", "rbac_needs_headers"]


class First:
    """Where the general path resumes after the fast path: an endpoint already picked, and
    the outcome of a try already made on it (None: no try yet, connect to it)."""

    __slots__ = ("endpoint", "outcome")

    def __init__(self, endpoint: EndpointSpec, outcome: Outcome | None) -> None:
        self.endpoint = endpoint
        self.outcome = outcome


# Rules that never look at request headers; any other kind (HeaderRule, or one added later)
# gets the header map.
_HEADER_FREE = (AnyRule, PrincipalRule, AuthenticatedRule, MetadataRule, PathRule, MethodRule,
                PortRule)


def _rule_needs_headers(rule: Rule) -> bool:
    if isinstance(rule, AndRule | OrRule):
        return any(_rule_needs_headers(r) for r in rule.rules)
    if isinstance(rule, NotRule):
        return _rule_needs_headers(rule.rule)
    return not isinstance(rule, _HEADER_FREE)


_RBAC_HEADERS: dict[int, tuple[RbacEngine, bool]] = {}


def rbac_needs_headers(engine: RbacEngine) -> bool:
    """Whether any rule of `engine` looks at request headers (cached per engine)."""
    found = _RBAC_HEADERS.get(id(engine))
    if found is not None and found[0] is engine:
        return found[1]
    policies = engine.deny + (engine.allow or ())
    needs = any(_rule_needs_headers(p.permissions) or _rule_needs_headers(p.principals)
                for p in policies)
    if len(_RBAC_HEADERS) > 64:
        _RBAC_HEADERS.clear()
    _RBAC_HEADERS[id(engine)] = (engine, needs)
    return needs
