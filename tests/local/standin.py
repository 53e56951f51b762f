"""Stand-in `hyphal control` / `hyphal proxy` processes for the supervisor's unit tests.

They honour only the process contract the supervisor relies on (flags, admin-token file,
`/ready`, `POST /api/v1/tokens`, admin `/ready` and `/quitquitquit`), so the runner's mechanics
can be tested without the real planes. The e2e tests use the real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/ready":
            self._send(200, {"ready": True})
        else:
            self._send(404, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/api/v1/tokens":
            self._send(200, {"token": f"tok.{body['namespace']}.{body['service_account']}"})
        elif self.path == "/quitquitquit":
            self._send(200, {})
            threading.Timer(0.05, lambda: os._exit(0)).start()
        else:
            self._send(404, {})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--state-dir")
    p.add_argument("--api-port", type=int)
    p.add_argument("--bootstrap")
    args, _ = p.parse_known_args()
    if args.command == "control":
        state = Path(args.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        (state / "admin-token").write_text("admin\n")
        port = args.api_port
    else:
        port = json.loads(Path(args.bootstrap).read_text())["admin_port"]
    print(f"standin {args.command} listening on {port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), _Handler).serve_forever()


if __name__ == "__main__":
    main()
