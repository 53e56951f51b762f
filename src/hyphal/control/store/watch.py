"""Directory watching by polling: a cheap fingerprint of the YAML files under a directory.

No inotify: a fingerprint is the set of (relative path, mtime_ns, size) of every
`*.yaml`/`*.yml`/`*.json` file that `config_files` lists, and any difference (a file added,
removed, touched or resized) means "reload the whole directory". Polling every half second
costs a few `stat` calls, and works the same on every platform and filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")

Fingerprint = frozenset[tuple[str, int, int]]


def config_files(root: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """Every config file under `root`, sorted.

    Hidden files and directories are skipped (a run directory such as `.hyphal/`, editor
    swap files), and so is anything under `exclude` (the state directory, when it sits inside
    the config directory: applied resources must not come back as config-dir ones).
    """
    if not root.is_dir():
        return []
    skip = tuple(p.resolve() for p in exclude)
    found: list[Path] = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in CONFIG_SUFFIXES or not path.is_file():
            continue
        if skip and any(path.resolve().is_relative_to(s) for s in skip):
            continue
        found.append(path)
    return sorted(found)


def fingerprint(root: Path, exclude: tuple[Path, ...] = ()) -> Fingerprint:
    """What the directory looks like now; equal fingerprints mean nothing to reload."""
    entries: set[tuple[str, int, int]] = set()
    for path in config_files(root, exclude):
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
    exclude: tuple[Path, ...] = ()
    _last: Fingerprint | None = field(default=None, init=False)

    def poll(self) -> bool:
        now = fingerprint(self.root, self.exclude)
        if now == self._last:
            return False
        self._last = now
        return True

    def mark_seen(self) -> None:
        """Record the current state as already loaded (used right after a full load)."""
        self._last = fingerprint(self.root, self.exclude)
