"""Harness for proxyless interop tests: greeter backends, an ADS server, grpcio's xDS client.

`async with grpc_interop() as it:` start backends (`await it.backend(b"a")` -> port), serve a
snapshot source over ADS (`await it.serve(source)`), then run `grpc_xds_client.py` against it
(`await it.client(target, calls, node)`) and read its JSON lines with `read_line`. Everything
started is stopped when the block exits, the client subprocess first.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from hyphal.control.xds.server import AdsServer

CLIENT = Path(__file__).with_name("grpc_xds_client.py")


@dataclass
class Interop:
    servers: list[grpc.aio.Server] = field(default_factory=list)
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    ads: AdsServer | None = None
    ads_port: int = 0

    async def backend(self, answer: bytes) -> int:
        """A plaintext gRPC server on 127.0.0.1 whose /demo.Greeter/Hello answers `answer`."""

        async def hello(request: bytes, context: Any) -> bytes:
            return answer

        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "demo.Greeter", {"Hello": grpc.unary_unary_rpc_method_handler(hello)}
                ),
            )
        )
        port: int = server.add_insecure_port("127.0.0.1:0")
        self.servers.append(server)
        await server.start()
        return port

    async def serve(self, source: Any, debounce: float = 0.05) -> AdsServer:
        """Our AdsServer for `source` on a plaintext port of 127.0.0.1 (`self.ads_port`)."""
        ads = AdsServer(source, debounce=debounce)
        server = grpc.aio.server()
        ads.add_to_server(server)
        self.ads_port = server.add_insecure_port("127.0.0.1:0")
        self.servers.append(server)
        await server.start()
        self.ads = ads
        await ads.start()
        return ads

    async def client(
        self, target: str, calls: int, node: dict[str, Any]
    ) -> asyncio.subprocess.Process:
        """grpcio's xDS client calling xds:///`target` (protocol: see grpc_xds_client.py)."""
        bootstrap = {
            "xds_servers": [
                {
                    "server_uri": f"127.0.0.1:{self.ads_port}",
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": node,
        }
        env = dict(os.environ, GRPC_XDS_BOOTSTRAP_CONFIG=json.dumps(bootstrap))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT),
            target,
            str(calls),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        self.procs.append(proc)
        return proc


async def read_line(proc: asyncio.subprocess.Process, timeout: float = 30) -> dict[str, Any]:
    """The client's next JSON line; fails if it exited instead."""
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert raw, "the xDS client subprocess exited early (see its stderr above)"
    result: dict[str, Any] = json.loads(raw)
    return result


@asynccontextmanager
async def grpc_interop() -> AsyncIterator[Interop]:
    it = Interop()
    try:
        yield it
    finally:
        for proc in it.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for server in it.servers:
            await server.stop(None)
        if it.ads is not None:
            await it.ads.stop()
