"""Tiny helpers shared by the shop apps: plain stdlib HTTP, nothing about the mesh.

Outbound calls use urllib.request, which honours HTTP_PROXY: the app just calls
http://<service>:8080/... by name, like it would anywhere else.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NAME = os.environ.get("APP_NAME", os.path.basename(sys.argv[0]).removesuffix(".py"))

# Trace headers of the request being served (one thread per request), copied onto the calls
# it makes, so a trace spans frontend -> order -> payment. The mesh cannot do this for the
# app: it does not know which incoming request an outgoing call belongs to.
TRACE_HEADERS = ("traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
                 "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")
_incoming = threading.local()


def call(method: str, url: str, body: Any = None, timeout: float = 5.0) -> dict[str, Any]:
    """Call another service; answer with its JSON and status (errors included, never raised)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", **getattr(_incoming, "trace", {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return {"status": resp.status, "body": json.loads(resp.read() or b"null")}
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        return {"status": exc.code, "reason": exc.headers.get("x-hyphal-reason"), "body": text}
    except (urllib.error.URLError, OSError) as exc:
        return {"status": None, "error": str(exc)}


class Handler(BaseHTTPRequestHandler):
    """Answers JSON; subclasses implement `handle_request(method, path, body) -> (status, obj)`."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True

    def handle_request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        raise NotImplementedError

    @property
    def caller(self) -> str:
        """Who called, from the x-forwarded-client-cert header the sidecar adds."""
        return self.headers.get("x-forwarded-client-cert", "")

    def _serve(self, method: str) -> None:
        _incoming.trace = {h: v for h in TRACE_HEADERS if (v := self.headers.get(h))}
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        status, obj = self.handle_request(method, self.path, body)
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        print(f"{NAME}: {method} {self.path} -> {status}; x-forwarded-client-cert: "
              f"{self.caller or '(none)'}", flush=True)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is printed by _serve


def serve(handler: type[Handler]) -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    print(f"{NAME} listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
