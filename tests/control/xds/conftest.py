"""Fixtures for the ADS server tests: a real grpc.aio ADS server on 127.0.0.1 (plaintext)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from xds_helpers import AdsEnv

from hyphal.control.xds.server import AdsServer
from hyphal.control.xds.snapshot import StaticSource


@pytest.fixture
async def make_env() -> AsyncIterator[Callable[..., Any]]:
    envs: list[AdsEnv] = []

    async def make(source: Any = None, **kwargs: Any) -> AdsEnv:
        source = source if source is not None else StaticSource()
        kwargs.setdefault("debounce", 0.02)
        ads = AdsServer(source, **kwargs)
        server = grpc.aio.server()
        ads.add_to_server(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await ads.start()
        env = AdsEnv(ads, source, server, port, grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        envs.append(env)
        return env

    try:
        yield make
    finally:
        for env in envs:
            for c in env.clients:
                c.close()
            await env.channel.close()
            await env.server.stop(None)
            await env.ads.stop()


@pytest.fixture
async def env(make_env: Callable[..., Any]) -> AdsEnv:
    result: AdsEnv = await make_env()
    return result
