"""JWKS fetching for RequestAuthentication `jwksUri`: the control plane fetches, caches and
refreshes key sets, and hands translation resources whose rules carry their keys inline.

Translation stays pure: `JwksResolver.resolve(resources)` returns the same resources with
every `jwksUri` rule given the last key set fetched for it (`jwks` set, `jwksUri` kept), so
sidecars receive `local_jwks` and never fetch. `run()` fetches a newly named URI at once
(within `poll_s`) and every URI again each `refresh_s`, on a daemon thread started when the
first URI is named; a fetch that changes a key set calls `on_change` (the snapshot source
re-resolves and pushes). A failed fetch keeps the last good key set;
a URI never fetched has no keys, so its tokens are refused until the first fetch succeeds.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from hyphal.config.models import RequestAuthentication

__all__ = ["DEFAULT_REFRESH_S", "JwksError", "JwksResolver", "fetch_jwks"]

log = logging.getLogger("hyphal.control.jwks")

DEFAULT_REFRESH_S = 300.0
MAX_JWKS_BYTES = 1 << 20


class JwksError(Exception):
    """A key set could not be fetched or is not a JWKS (the message names the URI)."""


def fetch_jwks(uri: str, timeout: float = 5.0) -> str:
    """GET `uri` (http or https) and return the JWKS text; raises JwksError saying why."""
    if not uri.startswith(("http://", "https://")):
        raise JwksError(f"jwksUri {uri!r}: only http:// and https:// are fetched")
    try:
        req = urllib.request.Request(uri, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise JwksError(f"jwksUri {uri}: cannot fetch: {exc}") from exc
    if len(body) > MAX_JWKS_BYTES:
        raise JwksError(f"jwksUri {uri}: larger than {MAX_JWKS_BYTES} bytes")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise JwksError(f"jwksUri {uri}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError(f'jwksUri {uri}: not a JSON Web Key Set ({{"keys": [...]}})')
    return json.dumps(doc, sort_keys=True)


def _refresh_from_env() -> float:
    raw = os.environ.get("HYPHAL_JWKS_REFRESH")
    try:
        return float(raw) if raw else DEFAULT_REFRESH_S
    except ValueError:
        log.warning("HYPHAL_JWKS_REFRESH=%r is not a number of seconds; using %.0f",
                    raw, DEFAULT_REFRESH_S)
        return DEFAULT_REFRESH_S


class JwksResolver:
    """Key sets by URI, the URIs the current resources name, and the refresh loop."""

    def __init__(self, fetch: Callable[[str], str] = fetch_jwks, *,
                 refresh_s: float | None = None, poll_s: float = 0.2,
                 on_change: Callable[[], None] | None = None) -> None:
        self._fetch = fetch
        self.refresh_s = refresh_s if refresh_s is not None else _refresh_from_env()
        self.poll_s = poll_s
        self.on_change = on_change
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}
        self._fetched_at: dict[str, float] = {}
        self._wanted: frozenset[str] = frozenset()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def key_sets(self) -> dict[str, str]:
        with self._lock:
            return dict(self._keys)

    def resolve(self, resources: Iterable[Any]) -> list[Any]:
        """`resources` with fetched keys inlined into every jwksUri rule; remembers the URIs."""
        out: list[Any] = []
        wanted: set[str] = set()
        with self._lock:
            keys = dict(self._keys)
        for r in resources:
            if isinstance(r, RequestAuthentication) and any(
                    rule.jwks_uri for rule in r.spec.jwt_rules):
                rules = []
                for rule in r.spec.jwt_rules:
                    if rule.jwks_uri is not None:
                        wanted.add(rule.jwks_uri)
                        if rule.jwks_uri in keys:
                            rule = rule.model_copy(update={"jwks": keys[rule.jwks_uri]})
                    rules.append(rule)
                spec = r.spec.model_copy(update={"jwt_rules": tuple(rules)})
                r = r.model_copy(update={"spec": spec}).with_source(r.source)
            out.append(r)
        with self._lock:
            self._wanted = frozenset(wanted)
        if wanted:
            self._ensure_running()
        return out

    def refresh(self, now: float | None = None) -> bool:
        """Fetch every wanted URI that is new or due; True when a key set changed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            due = [u for u in sorted(self._wanted)
                   if now - self._fetched_at.get(u, float("-inf")) >= self.refresh_s
                   or (u not in self._keys and now - self._fetched_at.get(u, 0.0) >= 1.0)]
        changed = False
        for uri in due:
            try:
                text = self._fetch(uri)
            except JwksError as exc:
                log.warning("%s; keeping the last key set%s", exc,
                            "" if uri in self._keys else " (none yet: its tokens are refused)")
                with self._lock:
                    self._fetched_at[uri] = now
                continue
            with self._lock:
                self._fetched_at[uri] = now
                if self._keys.get(uri) != text:
                    self._keys[uri] = text
                    changed = True
                    log.info("jwksUri %s: key set fetched", uri)
        return changed

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                changed = self.refresh()
                if changed and self.on_change is not None:
                    self.on_change()
            except Exception:  # a push failure must not stop the refresh loop
                log.exception("refreshing JWKS failed")

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._loop, name="hyphal-jwks", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the refresh thread (if any) within `poll_s`."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
