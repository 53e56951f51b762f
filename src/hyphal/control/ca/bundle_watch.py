"""Watches `ca/trust-bundle.pem` and hands every change to a reload callback.

Polling (mtime, size, inode) once a second is enough: bundle edits are rare, operator-made
and must reach sidecars within seconds, not microseconds; it needs no inotify and works on
every filesystem. Atomic replacement (a new inode) and in-place edits are both seen.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["BundleWatcher", "file_signature"]

log = logging.getLogger("hyphal.ca.watch")

Signature = tuple[int, int, int, int] | None


def file_signature(path: Path) -> Signature:
    """What changes when the file does: (inode, size, mtime ns, ctime ns); None if absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class BundleWatcher:
    """Calls `on_change()` when `path` changes; `check()` is one poll, `run()` polls forever."""

    def __init__(self, path: Path, on_change: Callable[[], object], interval: float = 1.0) -> None:
        self.path = path
        self.on_change = on_change
        self.interval = interval
        self._seen = file_signature(path)

    def check(self) -> bool:
        """Poll once; True if the file changed (and `on_change` was called)."""
        now = file_signature(self.path)
        if now == self._seen:
            return False
        self._seen = now
        if now is None:
            log.warning("%s was removed; keeping the roots already loaded", self.path)
            return True
        try:
            self.on_change()
        except Exception:  # a bad reload must not end the watch
            log.exception("reloading %s failed", self.path)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()
