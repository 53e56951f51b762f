"""The CA's Kubernetes authenticator: a projected ServiceAccount token, checked by TokenReview.

The injected sidecar sends its token (audience `hyphal-ca`, mounted by the projected volume)
as `authorization: Bearer ...`. The control plane asks the API server (`POST
/apis/authentication.k8s.io/v1/tokenreviews`) whether it is valid for that audience; the
username `system:serviceaccount:<ns>:<sa>` becomes `spiffe://<td>/ns/<ns>/sa/<sa>`. Answers
are cached for a short while by the token's hash, so a burst of pods costs one review each.
Implements `hyphal.control.ca.service.Authenticator`.
"""

from __future__ import annotations

import hashlib
import threading
import time

import httpx

from hyphal.control.ca.tokens import TokenError
from hyphal.identity.spiffe import SpiffeId
from hyphal.kube.client import KubeConfig
from hyphal.kube.inject import TOKEN_AUDIENCE

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
SA_PREFIX = "system:serviceaccount:"


def identity_of(username: str, trust_domain: str) -> SpiffeId:
    """`system:serviceaccount:shop:product` -> spiffe://<td>/ns/shop/sa/product."""
    if not username.startswith(SA_PREFIX) or username.count(":") != 3:
        raise TokenError(f"{username[:80]!r} is not a ServiceAccount: pods must use their "
                         "projected ServiceAccount token")
    ns, sa = username[len(SA_PREFIX):].split(":")
    try:
        return SpiffeId(trust_domain, ns, sa)
    except ValueError as exc:
        raise TokenError(f"ServiceAccount {ns}/{sa}: {exc}") from None


class TokenReviewAuthenticator:
    """Verifies tokens with the TokenReview API (blocking HTTP: the CA runs it in a thread)."""

    name = "kubernetes token"
    blocking = True

    def __init__(self, config: KubeConfig, trust_domain: str = "cluster.local",
                 audience: str = TOKEN_AUDIENCE, cache_seconds: float = 60.0,
                 timeout: float = 5.0) -> None:
        self._config = config
        self._trust_domain = trust_domain
        self._audience = audience
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._cache: dict[str, tuple[float, SpiffeId]] = {}
        self._lock = threading.Lock()

    def verify(self, token: str) -> SpiffeId:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[0] > now:
                return hit[1]
        sid = self._review(token)
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[digest] = (now + self._cache_seconds, sid)
        return sid

    def _review(self, token: str) -> SpiffeId:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self._audience]}}
        headers = {"Accept": "application/json"}
        own = self._config.token()
        if own:
            headers["Authorization"] = f"Bearer {own}"
        try:
            with httpx.Client(base_url=self._config.base_url, verify=self._config.verify(),
                              timeout=self._timeout) as http:
                response = http.post(REVIEW_PATH, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TokenError(f"the TokenReview API did not answer ({type(exc).__name__}); "
                             "retry") from None
        if response.status_code >= 300:
            raise TokenError(f"the TokenReview API answered {response.status_code}: check the "
                             "control plane's ClusterRole allows creating tokenreviews")
        try:
            status = response.json().get("status") or {}
        except ValueError:
            raise TokenError("the TokenReview API's answer is not JSON") from None
        if not status.get("authenticated"):
            why = str(status.get("error") or "not authenticated")[:200]
            raise TokenError(f"the API server refused the token: {why}")
        audiences = status.get("audiences")
        if audiences is not None and self._audience not in audiences:
            raise TokenError(f"the token is not for audience {self._audience!r}")
        return identity_of(str((status.get("user") or {}).get("username") or ""),
                           self._trust_domain)
