"""RBAC engine: Envoy's RBAC filter semantics (deny policies, then allow policies) on compiled rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from hyphal.proxy.runtime.matchers import HeaderMatcher, StringMatch


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
    `allow=()` means an ALLOW filter with no policies (everything is denied)."""

    deny: tuple[RbacPolicy, ...] = ()
    allow: tuple[RbacPolicy, ...] | None = None

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
        req = RbacRequest(principal, method, path, port, headers, auth)
        for policy in self.deny:
            if policy.matches(req):
                return False, policy.name
        if self.allow is None:
            return True, ""
        for policy in self.allow:
            if policy.matches(req):
                return True, policy.name
        return False, ""
