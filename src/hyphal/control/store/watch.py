"""Directory watching by polling: a cheap fingerprint of the YAML files under a directory.

No inotify: a fingerprint is the set of (relative path, mtime_ns, size) of every
`*.yaml`/`*.yml`/`*.json` file, and any difference (a file added, removed, touched or
resized) means "reload the whole directory". Polling every half second costs a few `stat`
calls, and works the same on every platform and filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")

Fingerprint = frozenset[tuple[str, int, int]]


def config_files(root: Path) -> list[Path]:
    """Every config file under `root`, sorted: the same files `hyphal.config.load_paths` reads."""
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in CONFIG_SUFFIXES and p.is_file()
    )


def fingerprint(root: Path) -> Fingerprint:
    """What the directory looks like now; equal fingerprints mean nothing to reload."""
    entries: set[tuple[str, int, int]] = set()
    for path in config_files(root):
        try:
            st = path.stat()
        except FileNotFoundError:  # removed between listing and stat: the next poll sees it
            continue
        entries.add((str(path.relative_to(root)), st.st_mtime_ns, st.st_size))
    return frozenset(entries)


@dataclass(slots=True)
class DirWatcher:
    """Remembers the last fingerprint it reported; `poll()` says whether it changed since."""

    root: Path
    _last: Fingerprint | None = field(default=None, init=False)

    def poll(self) -> bool:
        now = fingerprint(self.root)
        if now == self._last:
            return False
        self._last = now
        return True

    def mark_seen(self) -> None:
        """Record the current state as already loaded (used right after a full load)."""
        self._last = fingerprint(self.root)
