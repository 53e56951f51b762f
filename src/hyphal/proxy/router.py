"""Router core (pure): request target parsing, route selection, path and host rewrites."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hyphal.proxy.runtime.tables import PathKind, Route, RouteTable, VirtualHost


@dataclass(slots=True)  # not frozen: built per request, and frozen init costs 3x; never mutated
class Target:
    """A request target resolved to authority, path (no query) and raw query."""

    authority: str
    path: str
    query: str
    proxy_form: bool

    @property
    def origin(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


def parse_target(target: bytes, host: bytes | None) -> Target | None:
    """Origin-form (`/p?q` + Host) or absolute/proxy-form (`http://a:1/p?q`, as apps send
    through HTTP_PROXY). Returns None for forms a sidecar does not proxy (authority-form
    CONNECT, https absolute URIs, garbage)."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text[:1] == "/" and host is not None and "?" not in text and "#" not in text:
        # Hot path: origin-form with Host and no query (most requests).
        return Target(host.decode("latin-1").strip(), text, "", False)
    proxy_form = False
    if text.startswith("/"):
        if host is None:
            return None
        authority = host.decode("latin-1").strip()
        rest = text
    elif text[:7].lower() == "http://":
        proxy_form = True
        remainder = text[7:]
        slash = remainder.find("/")
        qmark = remainder.find("?")
        cut = min(i for i in (slash, qmark, len(remainder)) if i >= 0)
        authority = remainder[:cut]
        rest = remainder[cut:] or "/"
        if rest.startswith("?"):
            rest = "/" + rest
        if not authority or "@" in authority:
            return None
    elif text == "*" and host is not None:
        authority = host.decode("latin-1").strip()
        rest = "*"
    else:
        return None
    path, _, query = rest.partition("?")
    if "#" in query:
        query = query.split("#", 1)[0]
    if "#" in path:
        path = path.split("#", 1)[0]
    return Target(authority, path, query, proxy_form)


def select_route(
    table: RouteTable, target: Target, method: str, headers: Mapping[str, str] | None
) -> tuple[VirtualHost | None, Route | None]:
    """The virtual host for the target's authority and its first matching route. A catch-all
    table (`only`) skips the domain lookup, and a first route that matches on a path prefix
    alone (`leading_prefix`) is taken with one `startswith`."""
    vhost = table.only
    if vhost is None:
        vhost = table.find_virtual_host(target.authority)
        if vhost is None:
            return None, None
    prefix = vhost.leading_prefix
    if prefix is not None and target.path.startswith(prefix):
        return vhost, vhost.routes[0]
    return vhost, vhost.find_route(method, target.path, target.query, headers)


def rewrite_path(route: Route, target: Target) -> str:
    """Envoy's prefix_rewrite / regex_rewrite; the query string is kept."""
    path = target.path
    if route.prefix_rewrite is not None:
        match = route.match.path
        if match.kind is PathKind.PREFIX:
            path = route.prefix_rewrite + path[len(match.value):]
        else:
            path = route.prefix_rewrite
        if not path.startswith("/"):
            path = "/" + path
    elif route.regex_rewrite is not None:
        rewrite = route.regex_rewrite
        path = rewrite.pattern.sub(rewrite.substitution, path)
    return f"{path}?{target.query}" if target.query else path
