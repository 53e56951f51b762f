"""Inbound request path normalization (pure): what RBAC, routes and the app all see.

Envoy normalizes paths before RBAC (`normalize_path`, `merge_slashes`); without it
`/public/../admin`, `//admin` or `/%61dmin` slip past a policy on `/admin` while the app
serves `/admin`. Here: percent-encoded unreserved characters are decoded, other escapes
upper-cased, dot segments removed (RFC 3986 §5.2.4, clamped at the root) and slashes merged.
What cannot be made unambiguous is refused (None, a 400): escaped `/` or `\\` (`%2F`, `%5C`),
a raw backslash, `;` path parameters (servlet containers drop them before routing), control
characters and malformed escapes. Case is kept: paths are case-sensitive (RFC 3986 §6.2.2.1).
"""

from __future__ import annotations

import re
import string
from dataclasses import replace

from hyphal.proxy.router import Target

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)
_REFUSED = frozenset("\\;")
# Anything that may need changing or refusing: an escape, a backslash, a `;`, a character
# outside visible ASCII, an empty segment or a dot segment (`/.` also matches `/.well-known`,
# which then just takes the full normalizer). A path without any is already normal.
_SUSPECT = re.compile(r"[^!-~]|[%\\;]|//|/\.")


def normalize_path(path: str) -> str | None:
    """The normalized form of an origin-form path (no query), or None to refuse it."""
    if path[:1] == "/" and _SUSPECT.search(path) is None:
        return path  # hot path: most paths are already normal
    if path == "*":
        return path
    if not path.startswith("/"):
        return None
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        if c == "%":
            hx = path[i + 1 : i + 3]
            if len(hx) != 2 or not _HEX.issuperset(hx):
                return None
            ch = chr(int(hx, 16))
            if ch in "/\\" or ch == "\x00":
                return None
            out.append(ch if ch in _UNRESERVED else "%" + hx.upper())
            i += 3
            continue
        if c in _REFUSED or ord(c) < 0x21 or ord(c) >= 0x7F:
            return None
        out.append(c)
        i += 1
    joined = "".join(out)
    stack: list[str] = []
    for seg in joined.split("/")[1:]:
        if seg in ("", "."):
            continue
        if seg == "..":
            if stack:
                stack.pop()
            continue
        stack.append(seg)
    result = "/" + "/".join(stack)
    last = joined.rsplit("/", 1)[-1]
    if stack and last in ("", ".", ".."):
        result += "/"
    return result


def normalized(target: Target) -> Target | None:
    """`target` with its path normalized, or None when the path must be refused."""
    path = normalize_path(target.path)
    if path is None:
        return None
    return target if path == target.path else replace(target, path=path)
