"""The Kubernetes API client: in-cluster config, list, watch (JSON lines) and create on httpx.

In a pod, `KubeConfig.in_cluster()` reads the ServiceAccount token and CA from
/var/run/secrets/kubernetes.io/serviceaccount and the address from KUBERNETES_SERVICE_HOST /
KUBERNETES_SERVICE_PORT. A plaintext `http://` API is accepted only when the caller says so
explicitly (`KubeConfig.plaintext(url)`): the test suite's fake API server uses it.
Foreign exceptions (httpx, JSON) are mapped to `KubeError` here and nowhere else.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

JsonObject = dict[str, Any]


class KubeError(Exception):
    """A failed API call; `status` is the HTTP status (0: no answer) and the message says why."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Gone(KubeError):
    """410 Gone: the resourceVersion asked for is too old; list again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 410)


@dataclass(frozen=True, slots=True)
class KubeConfig:
    """Where the API server is and how to authenticate to it."""

    base_url: str
    token_file: Path | None = None
    ca_file: Path | None = None
    namespace: str = "hyphal-system"

    @classmethod
    def in_cluster(cls, sa_dir: Path = SA_DIR, env: Mapping[str, str] | None = None) -> KubeConfig:
        """The pod's own config; KubeError saying what is missing outside a cluster."""
        env = os.environ if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise KubeError(
                "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST/PORT are not set "
                "(pass --kube-api to name an API server)"
            )
        token, ca = sa_dir / "token", sa_dir / "ca.crt"
        for path in (token, ca):
            if not path.is_file():
                raise KubeError(f"{path} is missing: mount the pod's ServiceAccount token")
        ns_file = sa_dir / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.is_file() else "hyphal-system"
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", token, ca, namespace)

    @classmethod
    def plaintext(cls, url: str, namespace: str = "hyphal-system") -> KubeConfig:
        """An `http://` API server with no credentials (tests and `kubectl proxy` only)."""
        if not url.startswith("http://"):
            raise KubeError(f"{url!r}: a plaintext API URL must start with http://")
        return cls(url.rstrip("/"), namespace=namespace)

    def token(self) -> str | None:
        """Re-read on every request: kubelet rotates projected tokens."""
        if self.token_file is None:
            return None
        return self.token_file.read_text().strip()

    def verify(self) -> ssl.SSLContext | bool:
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))


def _status_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.text[:200]


class KubeClient:
    """A small async client for the few calls hyphal makes. Use as an async context manager."""

    def __init__(self, config: KubeConfig, timeout: float = 10.0) -> None:
        self.config = config
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=config.base_url, verify=config.verify(),
            timeout=httpx.Timeout(timeout, read=None),
        )

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self.config.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JsonObject:
        """GET a JSON object (a single object or a List with `metadata.resourceVersion`)."""
        try:
            response = await self._http.get(
                path, params=dict(params or {}), headers=self._headers(), timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise KubeError(f"GET {path}: {type(exc).__name__}: {exc}") from None
        return self._json(response, f"GET {path}")

    async def create(self, path: str, body: Mapping[str, Any]) -> JsonObject:
        """POST an object (Events, TokenReviews) and return the server's answer."""
        try:
            response = await self._http.post(
                path, json=dict(body), headers=self._headers(), timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise KubeError(f"POST {path}: {type(exc).__name__}: {exc}") from None
        return self._json(response, f"POST {path}")

    async def watch(
        self, path: str, resource_version: str, timeout_seconds: int = 300
    ) -> AsyncIterator[JsonObject]:
        """The watch events after `resource_version`, one JSON object per line, until the
        server ends the stream. Raises Gone when the server answers 410 up front; an `ERROR`
        event inside the stream is yielded as is (the informer decides)."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        try:
            async with self._http.stream("GET", path, params=params,
                                         headers=self._headers()) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._json(response, f"WATCH {path}")
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        raise KubeError(f"WATCH {path}: not a JSON line: {line[:80]!r}") from None
                    if isinstance(event, dict):
                        yield event
        except httpx.HTTPError as exc:
            raise KubeError(f"WATCH {path}: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _json(response: httpx.Response, what: str) -> JsonObject:
        if response.status_code == 410:
            raise Gone(f"{what}: 410 Gone: {_status_message(response)}")
        if response.status_code >= 400:
            raise KubeError(
                f"{what}: {response.status_code}: {_status_message(response)}",
                response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            raise KubeError(f"{what}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise KubeError(f"{what}: the answer is not a JSON object")
        return body
