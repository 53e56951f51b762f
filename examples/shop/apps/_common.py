"""Tiny helpers shared by the shop apps: plain stdlib HTTP, nothing about the mesh.

Outbound calls use urllib.request, which honours HTTP_PROXY: the app just calls
http://<service>:8080/... by name, like it would anywhere else.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NAME = os.environ.get("APP_NAME", os.path.basename(sys.argv[0]).removesuffix(".py"))


def call(method: str, url: str, body: Any = None, timeout: float = 5.0) -> dict[str, Any]:
    """Call another service; answer with its JSON and status (errors included, never raised)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
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
