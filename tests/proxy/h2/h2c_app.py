"""A tiny h2c (prior-knowledge HTTP/2, plaintext) app on the `h2` library, for tests.

Every request is answered 200 with JSON {name, protocol, method, path, authority, size,
headers}; `/retry-after/<s>` answers 503 with `retry-after: <s>` on its first call; `/chunks`
answers in three DATA frames without content-length; `/sleep/<s>` answers after <s>
seconds. In-process: `await H2cApp.start(name)`; as a process: `python h2c_app.py NAME PORT`
(e2e tests).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded
from h2.exceptions import H2Error


class _Conn(asyncio.Protocol):
    def __init__(self, app: H2cApp) -> None:
        self.app = app
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.heads: dict[int, list[tuple[bytes, bytes]]] = {}
        self.bodies: dict[int, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.app.connections += 1
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, RequestReceived):
                self.heads[event.stream_id] = list(event.headers)
                self.bodies[event.stream_id] = b""
            elif isinstance(event, DataReceived):
                self.bodies[event.stream_id] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
            elif isinstance(event, StreamEnded):
                self._answer(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                assert self.transport is not None
                self.transport.close()
        assert self.transport is not None
        self.transport.write(self.conn.data_to_send())

    def _answer(self, sid: int) -> None:
        head = self.heads.pop(sid)
        body = self.bodies.pop(sid)
        pseudo = {n.decode(): v.decode() for n, v in head if n.startswith(b":")}
        path = pseudo.get(":path", "")
        self.app.requests.append((time.monotonic(), path))
        self.app.received.append({"path": path, "authority": pseudo.get(":authority", ""),
                                  "size": len(body)})
        if path.startswith("/sleep/"):
            delay = float(path.rsplit("/", 1)[1])
            asyncio.get_running_loop().call_later(delay, self._late, sid, head, body, path)
            return
        self._reply(sid, head, body, path)

    def _late(self, sid: int, head: list[tuple[bytes, bytes]], body: bytes, path: str) -> None:
        try:
            self._reply(sid, head, body, path)
        except H2Error:  # the client reset the stream meanwhile
            pass

    def _reply(self, sid: int, head: list[tuple[bytes, bytes]], body: bytes, path: str) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        pseudo = {n.decode(): v.decode() for n, v in head if n.startswith(b":")}
        if path.startswith("/retry-after/") and self.app.seen.get(path, 0) == 0:
            self.app.seen[path] = 1
            self.conn.send_headers(sid, [(b":status", b"503"),
                                         (b"retry-after", path.rsplit("/", 1)[1].encode())],
                                   end_stream=True)
            self.transport.write(self.conn.data_to_send())
            return
        reply = json.dumps({
            "name": self.app.name, "protocol": "h2", "method": pseudo.get(":method"),
            "path": path, "authority": pseudo.get(":authority"), "size": len(body),
            "body": body[:64].decode("latin-1"),
            "headers": {n.decode(): v.decode() for n, v in head if not n.startswith(b":")},
        }).encode()
        if path == "/chunks":
            self.conn.send_headers(sid, [(b":status", b"200"),
                                         (b"content-type", b"text/plain")])
            for part in (b"one,", b"two,", b"three"):
                self.conn.send_data(sid, part)
            self.conn.end_stream(sid)
        else:
            self.conn.send_headers(sid, [(b":status", b"200"),
                                         (b"content-type", b"application/json"),
                                         (b"content-length", str(len(reply)).encode())])
            self.conn.send_data(sid, reply, end_stream=True)
        self.transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connections -= 1


class H2cApp:
    def __init__(self, name: str) -> None:
        self.name = name
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self.requests: list[tuple[float, str]] = []
        self.received: list[dict[str, object]] = []
        self.seen: dict[str, int] = {}

    @classmethod
    async def start(cls, name: str, port: int = 0) -> H2cApp:
        app = cls(name)
        loop = asyncio.get_running_loop()
        app.server = await loop.create_server(lambda: _Conn(app), "127.0.0.1", port)
        app.port = int(app.server.sockets[0].getsockname()[1])
        return app

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def _main(name: str, port: int) -> None:
    app = await H2cApp.start(name, port)
    assert app.server is not None
    await app.server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2])))
