"""SPIFFE identities of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>."""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "spiffe://"

# Trust domain: lowercase letters, digits, dots, dashes, underscores (SPIFFE spec §2.1).
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
# Path segments: the SPIFFE character set minus '/' ; '.' and '..' are forbidden separately.
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


def _check_trust_domain(td: str) -> None:
    if not td or not _TRUST_DOMAIN.match(td):
        raise ValueError(
            f"invalid SPIFFE trust domain {td!r}: use lowercase letters, digits, '.', '-', '_'"
        )


def _check_segment(what: str, value: str) -> None:
    if not value or value in (".", "..") or not _SEGMENT.match(value):
        raise ValueError(
            f"invalid {what} {value!r} in SPIFFE id: use letters, digits, '.', '-', '_'"
        )


def spiffe_uri(trust_domain: str, namespace: str, service_account: str) -> str:
    """`spiffe://<td>/ns/<ns>/sa/<sa>` from its parts, unchecked (a SpiffeId checks them)."""
    return f"{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A workload identity: trust domain, Kubernetes-style namespace and service account."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        _check_trust_domain(self.trust_domain)
        _check_segment("namespace", self.namespace)
        _check_segment("service account", self.service_account)

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse `spiffe://<td>/ns/<ns>/sa/<sa>` strictly; anything else is a ValueError."""
        expected = "expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
        if not isinstance(uri, str) or not uri.startswith(SCHEME):
            raise ValueError(f"not a SPIFFE id: {uri!r}; {expected}")
        rest = uri[len(SCHEME) :]
        if any(c in rest for c in "?#%@:") or any(c.isspace() for c in rest):
            raise ValueError(
                f"not a SPIFFE id: {uri!r}; no port, user info, query, fragment or escapes"
            )
        parts = rest.split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise ValueError(f"not a SPIFFE id: {uri!r}; {expected}")
        return cls(trust_domain=parts[0], namespace=parts[2], service_account=parts[4])

    @property
    def uri(self) -> str:
        return spiffe_uri(self.trust_domain, self.namespace, self.service_account)

    @property
    def principal(self) -> str:
        """Istio's principal form, as AuthorizationPolicy `principals` write it."""
        return self.uri[len(SCHEME) :]

    def __str__(self) -> str:
        return self.uri
