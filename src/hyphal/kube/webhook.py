"""The injection webhook's HTTPS endpoint: `POST /inject` with an AdmissionReview v1.

A small threaded server on its own port (the API server calls it rarely: once per pod
created); the answer comes from `hyphal.kube.inject.review_response`. Its serving
certificate is issued by the mesh CA for the control plane's Service DNS names, and the
MutatingWebhookConfiguration's caBundle is that CA's root.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hyphal.kube.inject import InjectConfig, review_response

log = logging.getLogger("hyphal.kube.webhook")

INJECT_PATH = "/inject"
MAX_BODY = 4 * 1024 * 1024


class WebhookServer:
    """HTTPS on host:port (0: the kernel picks); `start()` / `stop()` from any thread."""

    def __init__(self, cfg: InjectConfig, cert_file: Path, key_file: Path,
                 host: str = "0.0.0.0", port: int = 15017) -> None:
        self.cfg = cfg
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(cert_file), str(key_file))
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="hyphal-webhook", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("injection webhook listening on https://%s:%d%s",
                 self._server.server_address[0], self.port, INJECT_PATH)

    async def stop(self) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _handler(owner: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("webhook %s: " + fmt, self.client_address[0], *args)

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/ready":
                self._send(200, {"ready": True})
            else:
                self._send(404, {"error": f"POST an AdmissionReview to {INJECT_PATH}"})

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != INJECT_PATH:
                self._send(404, {"error": f"POST an AdmissionReview to {INJECT_PATH}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._send(400, {"error": f"body must be 1..{MAX_BODY} bytes of JSON"})
                return
            try:
                review = json.loads(self.rfile.read(length))
                if not isinstance(review, dict) or not isinstance(review.get("request"), dict):
                    raise ValueError("not an AdmissionReview with a request")
                answer = review_response(review, owner.cfg)
            except (ValueError, KeyError, TypeError) as exc:
                self._send(400, {"error": f"bad AdmissionReview: {exc}"})
                return
            patched = "patch" in answer["response"]
            req = review["request"]
            log.info("admission %s %s/%s: %s", req.get("operation"), req.get("namespace"),
                     (req.get("object") or {}).get("metadata", {}).get("generateName")
                     or req.get("name"), "injected" if patched else "left alone")
            self._send(200, answer)

    return Handler
