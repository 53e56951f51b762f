"""Where the general path resumes after the fast path (First), and whether an RBAC engine needs
the request's header map. (What `_route` and `_plan` decide is kept on the exchange itself.)"""

from __future__ import annotations

from hyphal.proxy.http.relay import Outcome
from hyphal.proxy.runtime.rbac import RbacEngine
from hyphal.proxy.runtime.tables import EndpointSpec

__all__ = ["First", "rbac_needs_headers"]


class First:
    """Where the general path resumes after the fast path: an endpoint already picked, and
    the outcome of a try already made on it (None: no try yet, connect to it)."""

    __slots__ = ("endpoint", "outcome")

    def __init__(self, endpoint: EndpointSpec, outcome: Outcome | None) -> None:
        self.endpoint = endpoint
        self.outcome = outcome


def rbac_needs_headers(engine: RbacEngine) -> bool:
    """Whether any rule of `engine` looks at request headers (compiled with the engine)."""
    return engine.needs_headers
