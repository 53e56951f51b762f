"""One control plane per state directory: an exclusive lock held for the process's lifetime.

Two `hyphal control` processes on one state directory would each rewrite `ports.json`, keep
their own copy of the applied resources and rotation phase, and race over the CA files; the
second one is refused before it touches anything (the lock is `flock`ed, so a crashed holder
never leaves a stale lock behind).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "control.lock"


class StateDirLocked(OSError):
    """Another control plane holds the state directory."""


def acquire(state_dir: Path) -> int:
    """Lock `state_dir` for this process; returns the descriptor to `release`.
    Raises StateDirLocked naming the holder's pid and what to do."""
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise StateDirLocked(
            f"another hyphal control (pid {holder}) is using the state directory {state_dir}; "
            "stop it first, or give this one its own --state-dir") from None
    os.fchmod(fd, 0o600)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)
