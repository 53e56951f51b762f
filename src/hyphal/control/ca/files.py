"""Private state files of the CA: 0700 directories, 0600 files, created once, never overwritten."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from hyphal.identity.files import write_private


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) with mode 0700; tighten an existing directory we own."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        path.chmod(0o700)


def write_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file that must not exist yet, atomically, with `mode` from the first byte on.

    The data goes to a temporary file that is hard-linked into place, so a crash never leaves
    a half-written key behind and an existing file is never replaced (FileExistsError if
    someone else made it first).
    """
    write_private(path, data, mode, exclusive=True)


def replace(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically replace a file that hyphal itself renews (the serving certificate)."""
    write_private(path, data, mode)


def read_private(path: Path) -> bytes:
    """Read a secret file, refusing one that group or others may read."""
    st = path.stat()
    if st.st_mode & 0o077:
        raise PermissionError(
            f"{path} is readable by group or others (mode {st.st_mode & 0o777:o}); "
            f"run `chmod 600 {path}` and start again"
        )
    return path.read_bytes()


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Serialise creation of state between processes starting at the same moment."""
    ensure_private_dir(directory)
    fd = os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
