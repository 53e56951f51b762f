"""The config store: config-dir resources overlaid by API-applied ones, changed all or nothing.

Theory of operation: two layers, each a dict from (kind, namespace, name) to a resource.
`dir` is what `--config-dir` holds (reloaded whole when its files change); `applied` is what
came through the API (persisted one file each under `<state-dir>/applied/`). The effective
set is `dir` overlaid by `applied`. Every change computes the would-be layers, loads and
validates the would-be effective set as a whole, and either commits it (new generation,
files written, listeners called) or refuses it with the errors, touching nothing.
Meant for one thread (the asyncio loop's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyphal.control.store import adapter, kinds
from hyphal.control.store.adapter import Key, ParseFailed, Resource
from hyphal.control.store.applied import AppliedDir
from hyphal.control.store.changes import (
    Action,
    ChangeResult,
    Outcome,
    ResourceRef,
    refs_from_yaml,
)
from hyphal.control.store.watch import DirWatcher, config_files

log = logging.getLogger("hyphal.control.store")

APPLIED_DIR = "applied"


class StoreLoadError(Exception):
    """The store could not load at start; `errors` say which file and field."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("config did not load:\n  " + "\n  ".join(self.errors))


@dataclass(frozen=True, slots=True)
class StoreState:
    """One committed version of the effective config, handed to listeners."""

    generation: int
    resources: Any  # hyphal.config.ResourceSet


Listener = Callable[[StoreState], None]


def _describe(key: Key) -> str:
    return f"{key[0]} {key[1]}/{key[2]}"


class Store:
    def __init__(
        self, state_dir: Path, config_dir: Path | None = None, trust_domain: str = "cluster.local"
    ) -> None:
        self.state_dir = state_dir
        self.trust_domain = trust_domain
        self.config_dir = config_dir
        self.applied_dir = AppliedDir(state_dir / APPLIED_DIR)
        self._dir: dict[Key, Resource] = {}
        self._applied: dict[Key, Resource] = {}
        self._applied_files: dict[Key, Path] = {}
        self._state = StoreState(0, adapter.build_set([]))
        self._listeners: list[Listener] = []
        self._watcher = (
            DirWatcher(config_dir, (state_dir,)) if config_dir is not None else None
        )
        self.loaded = False
        self.dir_errors: tuple[str, ...] = ()  # why the last config-dir reload was refused

    # ---- reading ----

    @property
    def generation(self) -> int:
        return self._state.generation

    @property
    def state(self) -> StoreState:
        return self._state

    @property
    def resources(self) -> Any:
        return self._state.resources

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(state)` after every committed change; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def origin(self, key: Key) -> str:
        """`applied` or `config-dir:<file>` for a key in the effective set."""
        if key in self._applied:
            return f"applied:{self._applied_files[key].name}"
        if key in self._dir:
            return f"config-dir:{adapter.source_file_of(self._dir[key])}"
        return ""

    def query(
        self, kind: str | None = None, namespace: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """Resources as JSON, sorted by kind/namespace/name; ValueError on an unknown kind."""
        want_kind = kinds.resolve(kind) if kind else None
        out: list[dict[str, Any]] = []
        for key, res in sorted(self._effective().items()):
            if want_kind and key[0] != want_kind:
                continue
            if namespace and key[1] != namespace:
                continue
            if name and key[2] != name:
                continue
            out.append({"source": self.origin(key), "resource": adapter.to_json(res)})
        return out

    # ---- loading ----

    def load(self) -> StoreState:
        """First load of the config dir and the applied files; StoreLoadError if bad."""
        errors: list[str] = []
        dir_layer: dict[Key, Resource] = {}
        if self.config_dir is not None:
            if not self.config_dir.is_dir():
                raise StoreLoadError([f"--config-dir {self.config_dir}: not a directory"])
            try:
                dir_layer = self._load_dir()
            except ParseFailed as exc:
                errors.extend(exc.errors)
        applied: dict[Key, Resource] = {}
        files: dict[Key, Path] = {}
        for path in self.applied_dir.files():
            try:
                loaded = adapter.parse_text(path.read_text(encoding="utf-8"), str(path))
            except ParseFailed as exc:
                errors.extend(exc.errors)
                errors.append(f"{path}: fix or remove this applied resource file")
                continue
            for res in loaded:
                applied[adapter.key_of(res)] = res
                files[adapter.key_of(res)] = path
        if errors:
            raise StoreLoadError(errors)
        candidate = adapter.build_set({**dir_layer, **applied}.values())
        problems = adapter.validate_set(candidate, self.trust_domain)
        if problems:
            raise StoreLoadError(problems)
        self._dir, self._applied, self._applied_files = dir_layer, applied, files
        if self._watcher is not None:
            self._watcher.mark_seen()
        self.loaded = True
        self._commit(candidate)
        log.info(
            "store loaded: %d resources from the config dir, %d applied (generation %d)",
            len(dir_layer), len(applied), self.generation,
        )
        return self._state

    def _load_dir(self) -> dict[Key, Resource]:
        assert self.config_dir is not None
        files = config_files(self.config_dir, exclude=(self.state_dir,))
        return {adapter.key_of(r): r for r in adapter.parse_files(self.config_dir, files)}

    # ---- changing ----

    def apply_text(self, text: str, source: str = "request") -> ChangeResult:
        """Create or replace every resource in `text` (YAML, one or more documents)."""
        return self.apply_sources([(source, text)])

    def apply_sources(self, sources: Sequence[tuple[str, str]]) -> ChangeResult:
        """Apply several (name, YAML text) inputs as one change set; errors name each input."""
        incoming: list[Resource] = []
        errors: list[str] = []
        for name, text in sources:
            try:
                incoming.extend(adapter.parse_text(text, name))
            except ParseFailed as exc:
                errors.extend(exc.errors)
        if errors:
            return self._refuse(422, errors)
        if not incoming:
            names = ", ".join(name for name, _ in sources) or "request"
            return self._refuse(400, [f"{names}: no resources to apply"])
        seen: dict[Key, Resource] = {}
        dupes = []
        for res in incoming:
            key = adapter.key_of(res)
            if key in seen:
                dupes.append(f"{adapter.source_of(res)}: {_describe(key)} appears twice "
                             f"(also at {adapter.source_of(seen[key])}); keep one")
            seen[key] = res
        if dupes:
            return self._refuse(422, dupes)
        effective = self._effective()
        outcomes: list[Outcome] = []
        new_applied = dict(self._applied)
        for key, res in seen.items():
            old = effective.get(key)
            action: Action
            if old is None:
                action = "created"
            elif adapter.same(old, res):
                action = "unchanged"
            else:
                action = "configured"
            outcomes.append(Outcome(*key, action=action, api_version=str(res.api_version)))
            if action != "unchanged":
                new_applied[key] = res
        return self._change(self._dir, new_applied, outcomes)

    def delete_text(self, text: str, source: str = "request") -> ChangeResult:
        try:
            refs = refs_from_yaml(text, source)
        except ValueError as exc:
            return self._refuse(400, [str(exc)])
        return self.delete(refs)

    def delete(self, refs: Sequence[ResourceRef]) -> ChangeResult:
        """Delete applied resources; config-dir ones are refused, naming their file."""
        errors: list[str] = []
        status = 0
        outcomes: list[Outcome] = []
        new_applied = dict(self._applied)
        named: set[Key] = set()
        for ref in refs:
            key = ref.key
            if key in named:
                continue  # named twice in one request
            named.add(key)
            if key in new_applied:
                res = new_applied.pop(key)
                note = ""
                if key in self._dir:
                    note = ("the config-dir version from "
                            f"{adapter.source_file_of(self._dir[key])} applies again")
                outcomes.append(Outcome(*key, action="deleted",
                                        api_version=str(res.api_version), note=note))
            elif key in self._dir:
                where = adapter.source_file_of(self._dir[key])
                errors.append(
                    f"{ref} comes from the config directory ({self._dir_path(where)}), not from "
                    "the API: remove it from that file instead"
                )
                status = status or 409
            else:
                errors.append(f"{ref} not found")
                status = 404 if status in (0, 404) else status
        if errors:
            return self._refuse(status, errors)
        return self._change(self._dir, new_applied, outcomes)

    def reload_config_dir(self) -> ChangeResult:
        """Reload the whole config dir; a dir with any error keeps the running config."""
        if self.config_dir is None:
            return ChangeResult(ok=True, generation=self.generation)
        try:
            new_dir = self._load_dir()
        except ParseFailed as exc:
            return self._refuse_dir(exc.errors)
        old_eff = self._effective()
        new_eff = {**new_dir, **self._applied}
        outcomes: list[Outcome] = []
        for key in sorted(set(old_eff) | set(new_eff)):
            old, new = old_eff.get(key), new_eff.get(key)
            if new is None:
                assert old is not None
                outcomes.append(Outcome(*key, action="deleted", api_version=str(old.api_version)))
            elif old is None:
                outcomes.append(Outcome(*key, action="created", api_version=str(new.api_version)))
            elif not adapter.same(old, new):
                outcomes.append(
                    Outcome(*key, action="configured", api_version=str(new.api_version))
                )
        result = self._change(new_dir, self._applied, outcomes, persist=False)
        if not result.ok:
            return self._refuse_dir(result.errors)
        self.dir_errors = ()
        if outcomes:
            log.info("config dir reloaded: %s (generation %d)",
                     ", ".join(f"{_describe((o.kind, o.namespace, o.name))} {o.action}"
                               for o in outcomes), self.generation)
        else:
            # Same content: keep the fresh sources (file names, documents), no new generation.
            self._dir = new_dir
        return result

    def poll(self) -> ChangeResult | None:
        """Reload the config dir if its files changed since the last look."""
        if self._watcher is None or not self._watcher.poll():
            return None
        return self.reload_config_dir()

    async def watch(self, interval: float = 0.5) -> None:
        """Poll the config dir forever (cancel the task to stop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.poll()
            except Exception:  # a bug in one reload must not stop watching
                log.exception("config dir reload failed")

    # ---- internals ----

    def _dir_path(self, rel: str) -> str:
        if self.config_dir is None or not rel:
            return rel or "config dir"
        return str(self.config_dir / rel)

    def _effective(self) -> dict[Key, Resource]:
        return {**self._dir, **self._applied}

    def _refuse(self, status: int, errors: Sequence[str]) -> ChangeResult:
        for err in errors:
            log.warning("change refused: %s", err)
        return ChangeResult.refused(self.generation, status, list(errors))

    def _refuse_dir(self, errors: Sequence[str]) -> ChangeResult:
        self.dir_errors = tuple(errors)
        log.error("config dir %s not reloaded, the running config stays (fix and save "
                  "again):\n  %s", self.config_dir, "\n  ".join(errors))
        return ChangeResult.refused(self.generation, 422, list(errors))

    def _change(
        self,
        new_dir: dict[Key, Resource],
        new_applied: dict[Key, Resource],
        outcomes: list[Outcome],
        persist: bool = True,
    ) -> ChangeResult:
        if not any(o.action != "unchanged" for o in outcomes):
            return ChangeResult(ok=True, generation=self.generation, outcomes=tuple(outcomes))
        candidate = adapter.build_set({**new_dir, **new_applied}.values())
        problems = adapter.validate_set(candidate, self.trust_domain)
        if problems:
            return self._refuse(422, problems)
        if persist:
            try:
                files = self._persist(new_applied)
            except OSError as exc:
                return self._refuse(500, [f"could not write {self.applied_dir.root}: {exc}"])
        else:
            files = self._applied_files
        self._dir, self._applied, self._applied_files = new_dir, new_applied, files
        self._commit(candidate)
        return ChangeResult(ok=True, generation=self.generation, outcomes=tuple(outcomes))

    def _persist(self, new_applied: dict[Key, Resource]) -> dict[Key, Path]:
        """Write changed applied files and remove deleted ones; on failure, restore."""
        files = {k: self._applied_files.get(k) or self.applied_dir.path_for(*k)
                 for k in new_applied}
        written: list[Key] = []
        try:
            for key, res in new_applied.items():
                old = self._applied.get(key)
                if old is not None and old is res:
                    continue
                self.applied_dir.write(files[key], adapter.dump_one(res))
                written.append(key)
        except OSError:
            for key in written:
                old = self._applied.get(key)
                if old is None:
                    self.applied_dir.remove(files[key])
                else:
                    self.applied_dir.write(files[key], adapter.dump_one(old))
            raise
        for key, path in self._applied_files.items():
            if key not in new_applied:
                self.applied_dir.remove(path)
        return files

    def _commit(self, resources: Any) -> None:
        self._state = StoreState(self._state.generation + 1, resources)
        for listener in list(self._listeners):
            try:
                listener(self._state)
            except Exception:
                log.exception("store listener %r failed", listener)
