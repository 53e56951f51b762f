"""A small HTTP/1.1 test app on stdlib http.server: prints its port, then serves.

Paths: /status/N, /flaky/KEY/N (503 for the first N requests of KEY), /sleep/MS, /ws
(101 then echoes raw bytes), /chunked, /big/N; anything else echoes the request as JSON.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import sys
import threading
import time
from typing import Any

NAME = sys.argv[1] if len(sys.argv) > 1 else "app"
FLAKY: dict[str, int] = {}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: without this Nagle + delayed ACK add 40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _simple(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-upstream", NAME)
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self) -> None:  # noqa: C901 - a test app's dispatch table
        body = self._body()
        path = self.path
        parts = path.split("?")[0].split("/")
        if path.startswith("/status/"):
            self._simple(int(parts[2]), f"{NAME} says {parts[2]}".encode())
            return
        if path.startswith("/flaky/"):
            key, failures = parts[2], int(parts[3])
            with LOCK:
                seen = FLAKY.get(key, 0)
                FLAKY[key] = seen + 1
            if seen < failures:
                self._simple(503, b"flaky")
                return
        if path.startswith("/sleep/"):
            time.sleep(float(parts[2]) / 1000)
        if path.startswith("/ws"):
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.rfile.read1(65536)
                if not data:
                    self.close_connection = True
                    return
                self.wfile.write(b"echo:" + data)
                self.wfile.flush()
        if path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("x-upstream", NAME)
            self.end_headers()
            for part in (b"one,", b"two,", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        if path.startswith("/big/"):
            size = int(parts[2])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            left = size
            while left > 0:
                self.wfile.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
            return
        payload = json.dumps({
            "server": NAME,
            "method": self.command,
            "path": path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "header_list": [[k, v] for k, v in self.headers.items()],
            "body_len": len(body),
            "body": body[:200].decode("latin-1"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-upstream", NAME)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def _exit_with_parent() -> None:
    """A test run that is killed must not leave this app behind."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main() -> None:
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
