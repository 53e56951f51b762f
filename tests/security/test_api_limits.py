"""The control plane API bounds what it reads: a negative or malformed Content-Length must not
turn into read-until-EOF (unbounded memory for anyone who can reach the port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hyphal.control.api import ApiHandlers, ApiServer, load_or_create_admin_token
from hyphal.control.health import Readiness
from hyphal.control.store import Store

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[int]:
    config_dir, state_dir = tmp_path / "config", tmp_path / "state"
    config_dir.mkdir()
    store = Store(state_dir, config_dir)
    store.load()
    token = load_or_create_admin_token(state_dir)
    handlers = ApiHandlers(store, token, Readiness().waiting, dict, lambda ns, sa, ttl: "")
    server = ApiServer(handlers, asyncio.get_running_loop())
    server.start()
    try:
        yield server.port
    finally:
        await asyncio.get_running_loop().run_in_executor(None, server.stop)


@pytest.mark.parametrize("length", ["-1", "abc", "1e9", " -5"])
async def test_bad_content_length_is_refused_without_reading(port: int, length: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST /api/v1/apply HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                     "\r\n".encode() + b"y" * 65536)  # and the connection stays open
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.split()[1] == b"400", status
    finally:
        writer.close()
