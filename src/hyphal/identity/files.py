"""Private files written atomically: keys, certificates, tokens and state, 0600 from byte one.

Every writer goes through a temporary file in the same directory that is renamed (or, for a
file that must not exist yet, hard-linked) into place, so a reader never sees half a key and
a crash never leaves one behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_private(
    path: Path,
    data: bytes,
    mode: int = 0o600,
    *,
    exclusive: bool = False,
    durable: bool = True,
) -> None:
    """Write `data` to `path` atomically, with `mode` from the first byte on.

    `exclusive`: the file must not exist yet (FileExistsError if another process made it
    first; an existing file is never replaced). `durable`: fsync before the rename, for
    secrets that must survive a crash; leave it off for files rewritten often.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
