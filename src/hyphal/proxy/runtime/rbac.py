"""RBAC engine: Envoy's RBAC filter semantics (deny policies, then allow policies) on compiled rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from hyphal.proxy.runtime.matchers import HeaderMatcher, StringKind, StringMatch


@dataclass(frozen=True, slots=True)
class RbacRequest:
    """What RBAC rules may look at. `headers` keys are lower-case and include `:method`, `:path`."""

    principal: str | None
    method: str
    path: str
    port: int
    headers: Mapping[str, str]
    auth: Mapping[str, Any] | None = None  # the verified JWT (hyphal.proxy.filters.jwt)


@dataclass(frozen=True, slots=True)
class AnyRule:
    def matches(self, req: RbacRequest) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class PrincipalRule:
    """`authenticated.principal_name`: the peer's URI SAN. Never matches a plaintext peer."""

    match: StringMatch

    def matches(self, req: RbacRequest) -> bool:
        return req.principal is not None and self.match.matches(req.principal)


@dataclass(frozen=True, slots=True)
class AuthenticatedRule:
    """`authenticated {}` with no name: any peer with a verified certificate."""

    def matches(self, req: RbacRequest) -> bool:
        return req.principal is not None


@dataclass(frozen=True, slots=True)
class MetadataRule:
    """`metadata` (Istio's `istio_authn`): a value of the verified JWT by `path`
    (`request.auth.principal`, `request.auth.audiences`, `request.auth.claims`, name...). A
    list value matches when any item does; no JWT never matches."""

    path: tuple[str, ...]
    match: StringMatch

    def matches(self, req: RbacRequest) -> bool:
        value: Any = req.auth
        for key in self.path:
            if not isinstance(value, Mapping) or key not in value:
                return False
            value = value[key]
        items = value if isinstance(value, list) else [value]
        return any(isinstance(v, str) and self.match.matches(v) for v in items)


@dataclass(frozen=True, slots=True)
class PathRule:
    """`url_path`: the path without the query string."""

    match: StringMatch

    def matches(self, req: RbacRequest) -> bool:
        return self.match.matches(req.path)


@dataclass(frozen=True, slots=True)
class MethodRule:
    methods: frozenset[str]

    def matches(self, req: RbacRequest) -> bool:
        return req.method in self.methods


@dataclass(frozen=True, slots=True)
class PortRule:
    ports: frozenset[int]

    def matches(self, req: RbacRequest) -> bool:
        return req.port in self.ports


@dataclass(frozen=True, slots=True)
class HeaderRule:
    header: HeaderMatcher

    def matches(self, req: RbacRequest) -> bool:
        return self.header.matches(req.headers)


@dataclass(frozen=True, slots=True)
class AndRule:
    rules: tuple[Rule, ...]

    def matches(self, req: RbacRequest) -> bool:
        return all(rule.matches(req) for rule in self.rules)


@dataclass(frozen=True, slots=True)
class OrRule:
    rules: tuple[Rule, ...]

    def matches(self, req: RbacRequest) -> bool:
        return any(rule.matches(req) for rule in self.rules)


@dataclass(frozen=True, slots=True)
class NotRule:
    rule: Rule

    def matches(self, req: RbacRequest) -> bool:
        return not self.rule.matches(req)


Rule = Union[
    AnyRule,
    PrincipalRule,
    AuthenticatedRule,
    MetadataRule,
    PathRule,
    MethodRule,
    PortRule,
    HeaderRule,
    AndRule,
    OrRule,
    NotRule,
]


@dataclass(frozen=True, slots=True)
class RbacPolicy:
    """One named Envoy Policy: matches when any permission AND any principal match.

    Build `permissions`/`principals` as OrRule of the proto's lists.
    """

    name: str
    permissions: Rule
    principals: Rule

    def matches(self, req: RbacRequest) -> bool:
        return self.permissions.matches(req) and self.principals.matches(req)


@dataclass(frozen=True, slots=True)
class RbacEngine:
    """Deny policies first (any match denies); then, if an ALLOW filter exists, some allow
    policy must match. `allow=None` means no ALLOW filter (everything not denied passes);
    `allow=()` means an ALLOW filter with no policies (everything is denied).

    Compiled once per engine: `needs_headers` (whether any rule reads request headers), and,
    when the decision depends on the peer's principal alone (no deny policies; allow policies
    that permit any request from exact principals, Istio's `from.source.principals`), a
    table from principal to decision, so that the common check is one dict lookup."""

    deny: tuple[RbacPolicy, ...] = ()
    allow: tuple[RbacPolicy, ...] | None = None
    needs_headers: bool = field(default=False, init=False, compare=False, repr=False)
    _by_principal: Mapping[str | None, tuple[bool, str]] | None = field(
        default=None, init=False, compare=False, repr=False)
    _otherwise: tuple[bool, str] = field(default=(False, ""), init=False, compare=False,
                                         repr=False)

    def __post_init__(self) -> None:
        policies = self.deny + (self.allow or ())
        object.__setattr__(self, "needs_headers", any(
            _needs_headers(p.permissions) or _needs_headers(p.principals) for p in policies))
        compiled = _compile_by_principal(self)
        if compiled is not None:
            object.__setattr__(self, "_by_principal", compiled[0])
            object.__setattr__(self, "_otherwise", compiled[1])

    def allowed(
        self,
        principal: str | None,
        method: str,
        path: str,
        port: int,
        headers: Mapping[str, str],
        auth: Mapping[str, Any] | None = None,
    ) -> tuple[bool, str]:
        """Return (allowed, name of the deciding policy or "" when none decided)."""
        table = self._by_principal
        if table is not None:  # the hot path: the principal alone decides
            return table.get(principal, self._otherwise)
        return self.evaluate(RbacRequest(principal, method, path, port, headers, auth))

    def evaluate(self, req: RbacRequest) -> tuple[bool, str]:
        """`allowed`, rule by rule (what the compiled table is checked against)."""
        for policy in self.deny:
            if policy.matches(req):
                return False, policy.name
        if self.allow is None:
            return True, ""
        for policy in self.allow:
            if policy.matches(req):
                return True, policy.name
        return False, ""


# ---------------------------------------------------------------- compilation

# Rules that never look at request headers; any other kind (HeaderRule, or one added later)
# needs the header map.
_HEADER_FREE = (AnyRule, PrincipalRule, AuthenticatedRule, MetadataRule, PathRule, MethodRule,
                PortRule)


def _needs_headers(rule: Rule) -> bool:
    if isinstance(rule, AndRule | OrRule):
        return any(_needs_headers(r) for r in rule.rules)
    if isinstance(rule, NotRule):
        return _needs_headers(rule.rule)
    return not isinstance(rule, _HEADER_FREE)


def _always(rule: Rule) -> bool:
    """Whether `rule` matches every request (conservative: False when unsure)."""
    if isinstance(rule, AnyRule):
        return True
    if isinstance(rule, OrRule):
        return any(_always(r) for r in rule.rules)
    if isinstance(rule, AndRule):
        return all(_always(r) for r in rule.rules)
    return False


def _principals(rule: Rule) -> frozenset[str] | bool:
    """The exact principals `rule` matches when it looks at nothing else: a set; True when it
    matches every request; False when it reads anything else (or matches in other ways)."""
    if _always(rule):
        return True
    if isinstance(rule, PrincipalRule):
        match = rule.match
        if match.kind is StringKind.EXACT and not match.ignore_case:
            return frozenset((match.value,))
        return False
    if isinstance(rule, OrRule):
        found: frozenset[str] = frozenset()
        for sub in rule.rules:
            names = _principals(sub)
            if names is False or names is True:
                return False  # True is impossible here: _always(rule) was False
            found |= names
        return found
    if isinstance(rule, AndRule):
        common: frozenset[str] | None = None
        for sub in rule.rules:
            names = _principals(sub)
            if names is True:
                continue
            if names is False:
                return False
            common = names if common is None else common & names
        return True if common is None else common
    return False


def _compile_by_principal(
    engine: RbacEngine,
) -> tuple[dict[str | None, tuple[bool, str]], tuple[bool, str]] | None:
    """(decision by principal, decision for any other principal or none) when the principal
    alone decides, else None. Policies are taken in order: the first that matches decides,
    as in `evaluate`."""
    if engine.deny:
        return None
    if engine.allow is None:
        return {}, (True, "")
    table: dict[str | None, tuple[bool, str]] = {}
    for policy in engine.allow:
        if not _always(policy.permissions):
            return None
        names = _principals(policy.principals)
        if names is True:
            return table, (True, policy.name)  # decides every request the others left
        if names is False:
            return None
        for name in names:
            table.setdefault(name, (True, policy.name))
    return table, (False, "")
