"""Fixtures for the kube tests: the fake API server (tests/kube/fake_api.py) and a client."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_api import FakeApi, fake_api

from hyphal.kube.client import KubeClient, KubeConfig


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with fake_api() as server:
        yield server


@pytest.fixture
async def client(api: FakeApi) -> AsyncIterator[KubeClient]:
    async with KubeClient(KubeConfig.plaintext(api.url), timeout=5) as c:
        yield c
