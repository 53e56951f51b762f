"""Request hash keys for consistent hashing: Envoy's hash_policy over header, cookie, source IP
and query parameter.

Terms are tried in order and the first that yields a value wins (hyphal's runtime tables
compile Envoy's `terminal` chains this way). A cookie term whose cookie is absent *creates*
one, as Envoy does when the policy has a `ttl`: the key is the new random value and
`HashKey.set_cookie` is the `Set-Cookie` header value the data plane must add to the
response, so the client's next request hashes to the same endpoint. No term yielding a value
gives `HashKey(None)`: the data plane then picks at random (Envoy does the same).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class HashPolicyTerm(Protocol):
    """What `hash_key_for` reads from a term; `hyphal.proxy.runtime.tables.HashPolicy` fits."""

    @property
    def header(self) -> str | None: ...
    @property
    def cookie(self) -> str | None: ...
    @property
    def query_parameter(self) -> str | None: ...
    @property
    def source_ip(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """One term. Exactly one of header / cookie / query_parameter / source_ip is set.
    `cookie_ttl_s` None or 0 makes generated cookies session cookies."""

    header: str | None = None
    cookie: str | None = None
    query_parameter: str | None = None
    source_ip: bool = False
    cookie_ttl_s: float | None = None
    cookie_path: str | None = "/"

    def __post_init__(self) -> None:
        chosen = sum(x is not None for x in (self.header, self.cookie, self.query_parameter))
        if chosen + int(self.source_ip) != 1:
            raise ValueError("a hash policy term needs exactly one of header, cookie, "
                             "query_parameter, source_ip")


@dataclass(frozen=True, slots=True)
class HashKey:
    """`key` to hash (None = no term applied); `set_cookie` when a cookie was generated."""

    key: bytes | None
    set_cookie: str | None = None
    generated_cookie: str | None = None


NO_KEY = HashKey(None)


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """The first value of cookie `name` in a (possibly `; `-joined) Cookie header."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        cname, sep, value = part.strip().partition("=")
        if sep and cname == name:
            return value.strip().strip('"')
    return None


def query_value(query: str, name: str) -> str | None:
    """The first raw value of parameter `name` in a query string (no leading `?`)."""
    if not query:
        return None
    for part in query.split("&"):
        pname, _, value = part.partition("=")
        if pname == name:
            return value
    return None


def hash_key_for(
    policy: Sequence[HashPolicyTerm],
    headers: Mapping[str, str],
    query: str = "",
    source_ip: str | None = None,
    rng: random.Random | None = None,
) -> HashKey:
    """The hash key of one request. `headers` has lower-case names (repeated headers joined
    with `, `, Cookie headers with `; `); `query` is the raw query string; `source_ip` the
    downstream peer's address without port."""
    for term in policy:
        if term.header is not None:
            value = headers.get(term.header.lower())
            if value:
                return HashKey(value.encode("latin-1"))
        elif term.cookie is not None:
            value = cookie_value(headers.get("cookie"), term.cookie)
            if value:
                return HashKey(value.encode("latin-1"))
            generated = f"{(rng or random).getrandbits(64):016x}"
            return HashKey(generated.encode(), _set_cookie(term, generated), generated)
        elif term.query_parameter is not None:
            value = query_value(query, term.query_parameter)
            if value:
                return HashKey(value.encode("latin-1"))
        elif term.source_ip and source_ip:
            return HashKey(source_ip.encode("ascii"))
    return NO_KEY


def _set_cookie(term: HashPolicyTerm, value: str) -> str:
    name = term.cookie
    parts = [f"{name}={value}"]
    path = getattr(term, "cookie_path", "/")
    if path:
        parts.append(f"Path={path}")
    ttl = getattr(term, "cookie_ttl_s", None)
    if ttl:
        parts.append(f"Max-Age={max(1, int(ttl))}")
    parts.append("HttpOnly")
    return "; ".join(parts)
