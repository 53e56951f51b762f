"""Active health checks: the state machine table, the schedule, and the asyncio prober
against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyphal.proxy.resilience.health import (
    CheckResult,
    HealthCheckConfig,
    HealthChecker,
    HealthState,
    Transition,
)
from hyphal.proxy.resilience.health_probe import HealthProber, http_probe, probe_tcp, split_key

A = "127.0.0.1:1"
PASS, NET, STATUS = CheckResult.PASS, CheckResult.NETWORK_FAIL, CheckResult.STATUS_FAIL


def checker(**overrides: object) -> HealthChecker:
    config = HealthCheckConfig(**overrides)  # type: ignore[arg-type]
    hc = HealthChecker(config, random.Random(0))
    hc.set_endpoints([A], 0.0)
    return hc


def test_network_failures_need_the_unhealthy_threshold() -> None:
    hc = checker(unhealthy_threshold=3)
    assert hc.record(A, NET, 1.0) is None
    assert hc.record(A, NET, 2.0) is None
    assert hc.is_healthy(A)
    transition = hc.record(A, NET, 3.0)
    assert transition == Transition(A, HealthState.HEALTHY, HealthState.UNHEALTHY, 3.0)
    assert hc.unhealthy() == {A}


def test_a_bad_status_is_unhealthy_at_once() -> None:
    hc = checker(unhealthy_threshold=5)
    assert hc.record(A, STATUS, 1.0) is not None
    assert hc.state(A) is HealthState.UNHEALTHY


def test_recovery_needs_the_healthy_threshold_and_a_failure_resets_it() -> None:
    hc = checker(healthy_threshold=3)
    hc.record(A, STATUS, 0.0)
    hc.record(A, PASS, 1.0)
    hc.record(A, PASS, 2.0)
    hc.record(A, NET, 3.0)
    hc.record(A, PASS, 4.0)
    hc.record(A, PASS, 5.0)
    assert not hc.is_healthy(A)
    assert hc.record(A, PASS, 6.0) is not None
    assert hc.is_healthy(A)


def test_start_unhealthy_needs_one_pass_like_envoy() -> None:
    hc = checker(start_healthy=False, healthy_threshold=3)
    assert not hc.is_healthy(A)
    assert hc.record(A, PASS, 1.0) is not None
    assert hc.is_healthy(A)


@settings(deadline=None)  # wall-clock limits flake on a loaded CI box
@given(st.lists(st.sampled_from(list(CheckResult)), max_size=40),
       st.integers(1, 4), st.integers(1, 4), st.booleans())
def test_state_matches_a_reference_model(results: list[CheckResult], up: int, down: int,
                                         start_healthy: bool) -> None:
    hc = HealthChecker(HealthCheckConfig(healthy_threshold=up, unhealthy_threshold=down,
                                         start_healthy=start_healthy), random.Random(0))
    hc.set_endpoints([A], 0.0)
    healthy, passes, fails, checked = start_healthy, 0, 0, False
    for t, result in enumerate(results):
        if result is PASS:
            passes, fails = passes + 1, 0
            if not healthy and (not checked or passes >= up):
                healthy, passes = True, 0
        else:
            passes, fails = 0, fails + 1
            if healthy and (result is STATUS or fails >= down):
                healthy, fails = False, 0
        checked = True
        hc.record(A, result, float(t))
        assert hc.is_healthy(A) is healthy


def test_schedule_uses_intervals_edges_and_jitter() -> None:
    hc = checker(interval_s=5.0, unhealthy_interval_s=1.0, unhealthy_edge_interval_s=0.5,
                 interval_jitter_s=0.2)
    assert hc.due(0.0) == [A]
    assert hc.due(0.0) == []  # in flight until recorded
    hc.record(A, PASS, 0.0)
    due = hc.next_due()
    assert due is not None and 5.0 <= due <= 5.2
    hc.due(due)
    hc.record(A, STATUS, 10.0)  # edge to unhealthy: the edge interval
    due = hc.next_due()
    assert due is not None and 10.5 <= due <= 10.7
    hc.due(due)
    hc.record(A, NET, 11.0)
    due = hc.next_due()
    assert due is not None and 12.0 <= due <= 12.2


def test_initial_jitter_spreads_first_probes_and_removed_endpoints_are_dropped() -> None:
    hc = HealthChecker(HealthCheckConfig(initial_jitter_s=1.0), random.Random(3))
    keys = [f"10.0.0.{i}:80" for i in range(50)]
    hc.set_endpoints(keys, 0.0)
    first = hc.due(0.5)
    assert 10 < len(first) < 40
    hc.set_endpoints(keys[:10], 0.5)
    rest = hc.due(1.0)
    assert set(first) | set(rest) >= set(keys[:10]) and set(rest) <= set(keys[:10])
    assert hc.record("10.0.0.49:80", PASS, 1.0) is None


def test_split_key() -> None:
    assert split_key("10.0.0.1:8080") == ("10.0.0.1", 8080)
    assert split_key("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError, match="not host:port"):
        split_key("nohost")


# ---------------------------------------------------------------- real sockets


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, dict[str, int]]]:
    """A tiny HTTP/1.1 server on 127.0.0.1: GET /healthz answers state["status"]."""
    state = {"status": 200}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            status = state["status"]
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, state
    finally:
        server.close()
        await server.wait_closed()


def free_closed_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_http_probe_results(http_server: tuple[int, dict[str, int]]) -> None:
    port, state = http_server
    probe = http_probe("/healthz")
    assert await probe("127.0.0.1", port, 1.0) is PASS
    state["status"] = 503
    assert await probe("127.0.0.1", port, 1.0) is STATUS
    assert await probe("127.0.0.1", free_closed_port(), 1.0) is NET
    assert await probe_tcp("127.0.0.1", port, 1.0) is PASS
    assert await probe_tcp("127.0.0.1", free_closed_port(), 1.0) is NET


async def test_http_probe_times_out_on_a_silent_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        assert await http_probe()("127.0.0.1", port, 0.2) is NET
        assert time.monotonic() - started < 2.0
    finally:
        server.close()
        await server.wait_closed()


async def test_prober_marks_an_endpoint_down_and_up(
        http_server: tuple[int, dict[str, int]]) -> None:
    port, state = http_server
    key = f"127.0.0.1:{port}"
    dead = f"127.0.0.1:{free_closed_port()}"
    hc = HealthChecker(HealthCheckConfig(interval_s=0.05, timeout_s=0.5, unhealthy_threshold=1,
                                         healthy_threshold=2))
    hc.set_endpoints([key, dead], time.monotonic())
    transitions: list[Transition] = []
    prober = HealthProber(hc, http_probe("/healthz"), transitions.append)
    task = asyncio.create_task(prober.run())
    try:
        async def wait_for(predicate: object) -> None:
            for _ in itertools.repeat(None, 250):
                if callable(predicate) and predicate():
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"timed out; transitions: {transitions}")

        await wait_for(lambda: not hc.is_healthy(dead))
        assert hc.is_healthy(key)
        state["status"] = 500
        await wait_for(lambda: not hc.is_healthy(key))
        state["status"] = 200
        await wait_for(lambda: hc.is_healthy(key))
        assert [(t.key, t.new) for t in transitions if t.key == key] == [
            (key, HealthState.UNHEALTHY), (key, HealthState.HEALTHY)]
    finally:
        prober.stop()
        await asyncio.wait_for(task, 2.0)
