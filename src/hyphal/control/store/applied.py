"""The `<state-dir>/applied/` directory: one YAML file per resource applied through the API.

Files are written atomically (temporary file in the same directory, fsync, rename), mode
0600, so that a crash never leaves a half-written resource behind. The file name is derived
from the resource's key and is stable, so applying a resource again replaces its file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hyphal.identity.files import write_private

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def file_name(kind: str, namespace: str, name: str) -> str:
    """`virtualservice.shop.product.yaml`; anything outside [A-Za-z0-9_.-] becomes `_`."""
    parts = (kind.lower(), namespace or "_", name)
    return ".".join(_UNSAFE.sub("_", p) for p in parts) + ".yaml"


class AppliedDir:
    """Reads and writes the applied-resource files; knows nothing about their content."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path_for(self, kind: str, namespace: str, name: str) -> Path:
        return self.root / file_name(kind, namespace, name)

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.suffix == ".yaml" and p.is_file())

    def write(self, path: Path, text: str) -> None:
        self.ensure()
        write_private(path, text.encode("utf-8"))
        self._sync_dir()

    def remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self._sync_dir()

    def _sync_dir(self) -> None:
        try:
            dfd = os.open(self.root, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
