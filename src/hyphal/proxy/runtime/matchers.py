"""Compiled string, header, query and path matchers (pure; shared by routes and RBAC)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class StringKind(StrEnum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    CONTAINS = "contains"
    REGEX = "regex"


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Envoy's StringMatcher: one comparison against a string value.

    `regex` is a full match (Envoy's RE2 `safe_regex` semantics).
    """

    kind: StringKind
    value: str
    ignore_case: bool = False
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind is StringKind.REGEX and self.pattern is None:
            flags = re.IGNORECASE if self.ignore_case else 0
            try:
                compiled = re.compile(self.value, flags)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.value!r}: {exc}") from exc
            object.__setattr__(self, "pattern", compiled)

    def matches(self, candidate: str) -> bool:
        kind = self.kind
        if kind is StringKind.REGEX:
            assert self.pattern is not None
            return self.pattern.fullmatch(candidate) is not None
        value = self.value
        if self.ignore_case:
            candidate = candidate.lower()
            value = value.lower()
        if kind is StringKind.EXACT:
            return candidate == value
        if kind is StringKind.PREFIX:
            return candidate.startswith(value)
        if kind is StringKind.SUFFIX:
            return candidate.endswith(value)
        return value in candidate


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """Envoy's HeaderMatcher. `name` is lower-case; `:method`, `:path`, `:authority` work too.

    `match` None means "present" (or, with `present=False`, "absent").
    """

    name: str
    match: StringMatch | None = None
    invert: bool = False
    present: bool = True

    def matches(self, headers: Mapping[str, str]) -> bool:
        value = headers.get(self.name)
        if self.match is None:
            result = (value is not None) == self.present
        else:
            result = value is not None and self.match.matches(value)
        return result != self.invert


@dataclass(frozen=True, slots=True)
class QueryMatcher:
    """Envoy's QueryParameterMatcher: `match` None means "present"."""

    name: str
    match: StringMatch | None = None

    def matches(self, query: Mapping[str, str]) -> bool:
        value = query.get(self.name)
        if value is None:
            return False
        return self.match is None or self.match.matches(value)


class PathKind(StrEnum):
    EXACT = "exact"
    PREFIX = "prefix"
    REGEX = "regex"


@dataclass(frozen=True, slots=True)
class PathMatch:
    """A route's path specifier (`path`, `prefix` or `safe_regex`), query string excluded."""

    kind: PathKind
    value: str
    case_sensitive: bool = True
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind is PathKind.REGEX and self.pattern is None:
            flags = 0 if self.case_sensitive else re.IGNORECASE
            try:
                compiled = re.compile(self.value, flags)
            except re.error as exc:
                raise ValueError(f"invalid path regex {self.value!r}: {exc}") from exc
            object.__setattr__(self, "pattern", compiled)

    def matches(self, path: str) -> bool:
        kind = self.kind
        if kind is PathKind.PREFIX:
            if self.case_sensitive:
                return path.startswith(self.value)
            return path.lower().startswith(self.value.lower())
        if kind is PathKind.EXACT:
            if self.case_sensitive:
                return path == self.value
            return path.lower() == self.value.lower()
        assert self.pattern is not None
        return self.pattern.fullmatch(path) is not None


def parse_query(query: str) -> dict[str, str]:
    """Split a raw query string into first-value-wins parameters (no percent-decoding, as Envoy)."""
    result: dict[str, str] = {}
    if not query:
        return result
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        result.setdefault(name, value)
    return result
