"""Free-port allocation on 127.0.0.1, below the kernel's ephemeral range when possible.

Ports in the ephemeral range (32768-60999 on Linux) can be taken at any moment by some other
process's outbound connection, so a port we hand to a child that binds it a second later is
safer below that range. We try random ports in a low window (checking that a bind succeeds),
remember what we handed out so one run never gives the same port twice, and fall back to
asking the kernel (port 0) when the window is crowded.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable

DEFAULT_LOW = 20000
DEFAULT_HIGH = 32000


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a listening socket could bind `host:port` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def kernel_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free (in the ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PortAllocator:
    """Hands out distinct free TCP ports on 127.0.0.1 for one run of the mesh."""

    __slots__ = ("_high", "_low", "_rng", "_taken")

    def __init__(
        self,
        low: int = DEFAULT_LOW,
        high: int = DEFAULT_HIGH,
        taken: Iterable[int] = (),
        seed: int | None = None,
    ) -> None:
        if not 0 < low < high < 65536:
            raise ValueError(f"port window {low}-{high} is not a valid range")
        self._low = low
        self._high = high
        self._taken: set[int] = set(taken)
        self._rng = random.Random(seed)

    @property
    def taken(self) -> frozenset[int]:
        return frozenset(self._taken)

    def allocate(self) -> int:
        """One free port not handed out before by this allocator."""
        for _ in range(200):
            port = self._rng.randint(self._low, self._high)
            if port in self._taken:
                continue
            if port_is_free(port):
                self._taken.add(port)
                return port
        for _ in range(50):
            port = kernel_port()
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise RuntimeError(
            "could not find a free TCP port on 127.0.0.1; is the machine out of ports?"
        )

    def allocate_many(self, n: int) -> list[int]:
        return [self.allocate() for _ in range(n)]
