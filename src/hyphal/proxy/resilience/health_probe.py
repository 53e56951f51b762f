"""Active health-check prober (asyncio I/O): HTTP GET expecting 2xx, or a TCP connect.

The decisions live in `health.HealthChecker`; this module only performs probes and feeds the
results back. `HealthProber.run()` sleeps until the checker's next due time, probes every due
endpoint concurrently (each bounded by the check's `timeout_s`), records the results and
calls `on_transition` for every state change. Endpoint keys are `host:port` (IPv6 as
`[addr]:port`); an `ssl` context makes the probe speak TLS (mTLS inbound listeners).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable

from hyphal.proxy.resilience.health import CheckResult, HealthChecker, Transition

Probe = Callable[[str, int, float], Awaitable[CheckResult]]


def split_key(key: str) -> tuple[str, int]:
    """`10.0.0.1:8080` / `[::1]:8080` -> (host, port)."""
    host, sep, port = key.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"health check target {key!r} is not host:port")
    return host.strip("[]"), int(port)


async def probe_tcp(host: str, port: int, timeout_s: float) -> CheckResult:
    """PASS when a TCP connection opens within `timeout_s`."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (TimeoutError, OSError):
        return CheckResult.NETWORK_FAIL
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return CheckResult.PASS


async def probe_http(host: str, port: int, timeout_s: float, path: str = "/",
                     authority: str | None = None,
                     ssl: ssl_module.SSLContext | None = None) -> CheckResult:
    """GET `path`; PASS on 2xx, STATUS_FAIL on any other status, NETWORK_FAIL when no status
    line arrives within `timeout_s` (connect error, reset, timeout, garbage)."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {authority or f'{host}:{port}'}\r\n"
        "User-Agent: hyphal-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")

    async def exchange() -> CheckResult:
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl)
        try:
            writer.write(request)
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl_module.SSLError):
                await writer.wait_closed()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return CheckResult.NETWORK_FAIL
        return CheckResult.PASS if 200 <= int(parts[1]) < 300 else CheckResult.STATUS_FAIL

    try:
        return await asyncio.wait_for(exchange(), timeout_s)
    except (TimeoutError, OSError, ssl_module.SSLError):
        return CheckResult.NETWORK_FAIL


def http_probe(path: str = "/", authority: str | None = None,
               ssl: ssl_module.SSLContext | None = None) -> Probe:
    async def probe(host: str, port: int, timeout_s: float) -> CheckResult:
        return await probe_http(host, port, timeout_s, path, authority, ssl)
    return probe


class HealthProber:
    """Drives one cluster's `HealthChecker` until `stop()`."""

    def __init__(self, checker: HealthChecker, probe: Probe,
                 on_transition: Callable[[Transition], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.checker = checker
        self.probe = probe
        self.on_transition = on_transition
        self.clock = clock
        self._wake = asyncio.Event()
        self._stopped = False
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Call after changing the checker's endpoints so new ones are probed on time."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def _probe_one(self, key: str) -> None:
        try:
            host, port = split_key(key)
            result = await self.probe(host, port, self.checker.config.timeout_s)
        except ValueError:
            result = CheckResult.NETWORK_FAIL
        transition = self.checker.record(key, result, self.clock())
        if transition is not None and self.on_transition is not None:
            self.on_transition(transition)
        self._wake.set()

    async def run(self) -> None:
        try:
            while not self._stopped:
                now = self.clock()
                for key in self.checker.due(now):
                    task = asyncio.create_task(self._probe_one(key))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                due = self.checker.next_due()
                self._wake.clear()
                timeout = None if due is None else max(due - self.clock(), 0.0)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
