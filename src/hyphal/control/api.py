"""The control plane's HTTP API: health, readiness, apply/delete/get, status and tokens.

Theory of operation: a stdlib `ThreadingHTTPServer` runs in its own thread and parses HTTP;
every request that touches control-plane state is handed to the asyncio loop with
`asyncio.run_coroutine_threadsafe`, so the store, registry and ADS server are only ever
touched from the loop thread. `ApiHandlers` is the I/O-free part (method, path, query,
headers, body in; status and JSON out) and is what the unit tests drive.

Endpoints (all JSON; errors are `{"errors": [...]}`):
  GET  /healthz                 live (no auth)
  GET  /ready                   200 once every component is ready, else 503 (no auth)
  POST /api/v1/apply            body: YAML (multi-document), or JSON {"files": [{name, text}]}
                                so errors name each file; 200 with per-resource outcomes
  POST /api/v1/delete           body: YAML, or JSON {"resources": [{kind, name, namespace}]}
  GET  /api/v1/resources        ?kind=&namespace=&name=
  GET  /api/v1/status           xDS connections, registry, CA
  POST /api/v1/tokens           JSON {"namespace", "service_account", "ttl_seconds"?}
  GET  /api/v1/stats            ?namespace=&kind=deploy|svc  golden metrics (control/telemetry.py)
  GET  /api/v1/graph            ?namespace=  service graph edges
  GET  /api/v1/metrics          every sidecar's series, Prometheus text (federation)
  GET  /api/v1/ca               roots, signing root, rotation phase, each sidecar's trust
  POST /api/v1/ca/rotate        JSON {"step": "prepare" | "switch"}; 409 when not yet allowed
  POST /api/v1/ca/retire        JSON {"fingerprint": HEX}; 409 when not yet allowed
Everything under /api/ needs `Authorization: Bearer <admin-token>`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hyphal.control.client import ADMIN_TOKEN_FILE
from hyphal.control.store import ChangeResult, Store, parse_refs

log = logging.getLogger("hyphal.control.api")

MAX_BODY = 8 * 1024 * 1024

JSONValue = Any
Readiness = Callable[[], list[str]]  # names of the components that are not ready yet
StatusFn = Callable[[], Mapping[str, JSONValue]]
MintToken = Callable[[str, str, float | None], str]  # (namespace, sa, ttl seconds) -> JWT


def load_or_create_admin_token(state_dir: Path) -> str:
    """`<state-dir>/admin-token` (0600), made on first start and never overwritten."""
    path = state_dir / ADMIN_TOKEN_FILE
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: JSONValue
    content_type: str = "application/json"  # anything else: `body` is sent as text


def _errors(status: int, *errors: str) -> Reply:
    return Reply(status, {"errors": list(errors)})


def _change_reply(result: ChangeResult) -> Reply:
    if not result.ok:
        return Reply(result.status or 422, {"errors": list(result.errors)})
    return Reply(200, result.to_json())


def _sources(payload: Any) -> list[tuple[str, str]]:
    """`{"files": [{"name": "vs.yaml", "text": "..."}]}` -> [(name, text)]."""
    files = payload.get("files") if isinstance(payload, dict) else None
    if not isinstance(files, list) or not files:
        raise ValueError("'files' must be a non-empty list of {name, text}")
    out: list[tuple[str, str]] = []
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("text"), str):
            raise ValueError(f"files[{i}] must be an object with a 'text' string")
        out.append((str(f.get("name") or f"files[{i}]"), f["text"]))
    return out


class ApiHandlers:
    """Request logic without sockets; every method runs on the asyncio loop's thread."""

    def __init__(
        self,
        store: Store,
        admin_token: str,
        readiness: Readiness | None = None,
        status: StatusFn | None = None,
        mint_token: MintToken | None = None,
        telemetry: Any = None,  # a control.telemetry.TelemetryAggregator
    ) -> None:
        self.telemetry = telemetry
        self.ca_trust: Any = None  # a control.ca.trust.TrustManager, set once the CA runs
        self.store = store
        self.admin_token = admin_token
        self.readiness = readiness or list
        self.status = status or dict
        self.mint_token = mint_token

    def authorized(self, headers: Mapping[str, str]) -> bool:
        value = headers.get("authorization") or headers.get("Authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return hmac.compare_digest(token.strip().encode(), self.admin_token.encode())

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Reply:
        split = urlsplit(target)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        if path == "/healthz":
            return Reply(200, {"status": "ok"})
        if path == "/ready":
            waiting = self.readiness()
            if waiting:
                return Reply(503, {"ready": False, "waiting_for": waiting})
            return Reply(200, {"ready": True, "generation": self.store.generation})
        if not path.startswith("/api/"):
            return _errors(404, f"no such endpoint {path}; see /api/v1/...")
        if not self.authorized(headers):
            return _errors(
                401,
                "missing or wrong admin token: send 'Authorization: Bearer <token>' with the "
                "contents of <state-dir>/admin-token",
            )
        if path in ("/api/v1/apply", "/api/v1/delete", "/api/v1/resources") and not getattr(
            self.store, "loaded", True
        ):
            return _errors(503, "the control plane is still loading its config; retry shortly")
        routes: dict[tuple[str, str], Callable[[], Reply]] = {
            ("POST", "/api/v1/apply"): lambda: self._apply(headers, body),
            ("POST", "/api/v1/delete"): lambda: self._delete(headers, body),
            ("GET", "/api/v1/resources"): lambda: self._resources(query),
            ("GET", "/api/v1/status"): lambda: Reply(200, dict(self.status())),
            ("POST", "/api/v1/tokens"): lambda: self._tokens(body),
            ("GET", "/api/v1/stats"): lambda: self._telemetry("stats", query),
            ("GET", "/api/v1/graph"): lambda: self._telemetry("graph", query),
            ("GET", "/api/v1/metrics"): lambda: self._telemetry("metrics", query),
            ("GET", "/api/v1/ca"): lambda: self._ca("show", body),
            ("POST", "/api/v1/ca/rotate"): lambda: self._ca("rotate", body),
            ("POST", "/api/v1/ca/retire"): lambda: self._ca("retire", body),
        }
        handler = routes.get((method, path))
        if handler is None:
            allowed = sorted(m for (m, p) in routes if p == path)
            if allowed:
                return _errors(405, f"{method} is not allowed on {path}; use {', '.join(allowed)}")
            return _errors(404, f"no such endpoint {path}")
        return handler()

    @staticmethod
    def _read(headers: Mapping[str, str], body: bytes) -> tuple[str, bool] | Reply:
        """The body as text and whether its Content-Type is JSON, or a 400 if not UTF-8."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _errors(400, f"request body is not UTF-8: {exc}")
        ctype = (headers.get("content-type") or headers.get("Content-Type") or "").lower()
        return text, "json" in ctype

    def _apply(self, headers: Mapping[str, str], body: bytes) -> Reply:
        read = self._read(headers, body)
        if isinstance(read, Reply):
            return read
        text, is_json = read
        if is_json:
            try:
                sources = _sources(json.loads(text))
            except ValueError as exc:
                return _errors(400, f"bad apply request: {exc}")
            return _change_reply(self.store.apply_sources(sources))
        if not text.strip():
            return _errors(400, "empty request body: send the resources as YAML")
        return _change_reply(self.store.apply_text(text, source="request"))

    def _delete(self, headers: Mapping[str, str], body: bytes) -> Reply:
        read = self._read(headers, body)
        if isinstance(read, Reply):
            return read
        text, is_json = read
        if is_json:
            try:
                payload = json.loads(text)
                refs = parse_refs(payload.get("resources") if isinstance(payload, dict) else None)
            except ValueError as exc:
                return _errors(400, f"bad delete request: {exc}")
            return _change_reply(self.store.delete(refs))
        if not text.strip():
            return _errors(400, "empty request body: send YAML resources or JSON references")
        return _change_reply(self.store.delete_text(text, source="request"))

    def _resources(self, query: Mapping[str, str]) -> Reply:
        try:
            items = self.store.query(
                kind=query.get("kind") or None,
                namespace=query.get("namespace") or None,
                name=query.get("name") or None,
            )
        except ValueError as exc:
            return _errors(400, str(exc))
        return Reply(200, {"generation": self.store.generation, "items": items})

    def _telemetry(self, view: str, query: Mapping[str, str]) -> Reply:
        t = self.telemetry
        if t is None:
            return _errors(503, "telemetry aggregation is not running on this control plane")
        ns = query.get("namespace") or None
        if view == "metrics":
            return Reply(200, t.federate(), "text/plain; version=0.0.4")
        if view == "graph":
            return Reply(200, t.graph(ns))
        try:
            return Reply(200, t.stats(ns, query.get("kind") or "deploy"))
        except ValueError as exc:
            return _errors(400, str(exc))

    def _ca(self, action: str, body: bytes) -> Reply:
        from hyphal.control.ca.rotation import RotationRefused

        trust = self.ca_trust
        if trust is None:
            return _errors(503, "the certificate authority is not running yet; retry shortly")
        try:
            payload = json.loads(body or b"{}")
        except ValueError as exc:
            return _errors(400, f"request body is not JSON: {exc}")
        if not isinstance(payload, dict):
            return _errors(400, "request body must be a JSON object")
        try:
            if action == "show":
                return Reply(200, trust.show())
            if action == "retire":
                fp = payload.get("fingerprint")
                if not isinstance(fp, str) or not fp:
                    return _errors(400, "'fingerprint' is required (see GET /api/v1/ca)")
                return Reply(200, trust.retire(fp))
            step = payload.get("step")
            if step == "prepare":
                return Reply(200, trust.prepare())
            if step == "switch":
                return Reply(200, trust.switch())
            return _errors(400, "'step' must be 'prepare' or 'switch'")
        except RotationRefused as exc:
            return _errors(409, str(exc))

    def _tokens(self, body: bytes) -> Reply:
        if self.mint_token is None:
            return _errors(503, "token issuing is not available on this control plane")
        try:
            payload = json.loads(body or b"{}")
        except ValueError as exc:
            return _errors(400, f"request body is not JSON: {exc}")
        if not isinstance(payload, dict):
            return _errors(400, "request body must be a JSON object")
        ns = payload.get("namespace")
        sa = payload.get("service_account")
        ttl = payload.get("ttl_seconds")
        if not isinstance(ns, str) or not ns or not isinstance(sa, str) or not sa:
            return _errors(400, "'namespace' and 'service_account' are required strings")
        if ttl is not None and (not isinstance(ttl, (int, float)) or ttl <= 0):
            return _errors(400, "'ttl_seconds' must be a positive number")
        try:
            token = self.mint_token(ns, sa, float(ttl) if ttl is not None else None)
        except ValueError as exc:
            return _errors(400, str(exc))
        return Reply(200, {"token": token, "namespace": ns, "service_account": sa})


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    server_version = "hyphal-control"

    def _serve(self) -> None:
        raw_length = (self.headers.get("Content-Length") or "0").strip()
        if not (raw_length.isascii() and raw_length.isdigit()) or self.headers.get(
                "Transfer-Encoding"):
            # never read-until-EOF: a negative or malformed length is refused unread
            self.close_connection = True
            self._send(_errors(400, "send the body with a decimal Content-Length "
                                    "(no Transfer-Encoding)"))
            return
        length = int(raw_length)
        if length > MAX_BODY:
            self.close_connection = True  # the unread body must not be parsed as a request
            self._send(_errors(413, f"request body over {MAX_BODY} bytes"))
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.server.dispatch(self.command, self.path, headers, body)
        except Exception as exc:  # a bug must not kill the server thread; say what happened
            log.exception("API %s %s failed", self.command, self.path)
            reply = _errors(500, f"internal error: {type(exc).__name__}: {exc}")
        self._send(reply)

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve

    def _send(self, reply: Reply) -> None:
        if reply.content_type == "application/json":
            data = (json.dumps(reply.body, indent=2, sort_keys=False) + "\n").encode()
        else:
            data = str(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("API %s " + format, self.address_string(), *args)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    dispatch: Callable[[str, str, Mapping[str, str], bytes], Reply]


class ApiServer:
    """Serves `ApiHandlers` on 127.0.0.1:port from a thread; handlers run on `loop`."""

    def __init__(
        self,
        handlers: ApiHandlers,
        loop: asyncio.AbstractEventLoop,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 30.0,
    ) -> None:
        self.handlers = handlers
        self.loop = loop
        self.timeout = timeout
        try:
            self._httpd = _HttpServer((host, port), _Handler)
        except OSError as exc:
            raise OSError(
                f"cannot listen on {host}:{port} (--api-port): {exc.strerror or exc}; stop what "
                "holds it or pick another --api-port"
            ) from exc
        self._httpd.dispatch = self._dispatch
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def _dispatch(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        if urlsplit(target).path.rstrip("/") in ("/healthz", "/ready"):
            # Liveness and readiness read only thread-safe state: never wait for a busy loop.
            return self.handlers.handle(method, target, headers, body)

        async def run() -> Reply:
            return self.handlers.handle(method, target, headers, body)

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            return _errors(504, f"the control plane did not answer within {self.timeout:g}s")

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
            name="hyphal-api", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
