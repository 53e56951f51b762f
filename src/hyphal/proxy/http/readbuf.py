"""Reads into one lent buffer per thread: the HTTP/1.1 protocols as asyncio BufferedProtocols.

Why: uvloop's TLS layer hands a plain `asyncio.Protocol` each read as a new `bytes` made by
`SSLObject.read(256 KiB)` — a 256 KiB allocation per read, which glibc serves with mmap,
mremap and munmap (and page faults) whenever its mmap threshold sits at the default 128 KiB:
three extra syscalls and tens of µs per request on an mTLS leg. A `BufferedProtocol` gets
`SSLObject.read(n, buffer)` into memory it lends instead, and `buffer_updated` copies out
exactly the bytes read (one small `bytes`, as plaintext reads get). Plaintext transports
read into it the same way (uvloop and asyncio both support buffered protocols).

The buffer is per thread (each thread runs its own loop) and only borrowed for one read:
`buffer_updated` copies the bytes out before anything can read into it again.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["READ_BUFFER_SIZE", "BufferedReads"]

# uvloop's own read size for TLS and plaintext: one read takes whatever has arrived.
READ_BUFFER_SIZE = 262144


class _Buffer(threading.local):
    def __init__(self) -> None:
        self.view = memoryview(bytearray(READ_BUFFER_SIZE))


_BUFFER = _Buffer()


class BufferedReads(asyncio.BufferedProtocol):
    """Mixin: `get_buffer`/`buffer_updated` feeding the subclass's `data_received(bytes)`."""

    __slots__ = ("_view",)

    def get_buffer(self, sizehint: int) -> memoryview:
        # This thread's buffer, looked up once per connection (a protocol lives on one loop).
        try:
            return self._view
        except AttributeError:
            self._view: memoryview = _BUFFER.view
            return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        raise NotImplementedError
