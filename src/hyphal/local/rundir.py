"""The run directory (`.hyphal` by default): layout, permissions and the `mesh.json` record.

    RUN/             0700
      mesh.json      what runs: api, state_dir, supervisor_pid, phase, processes, replicas
      logs/          one log per process (and supervisor.log)
      tokens/        bootstrap tokens, 0600
      bootstrap/     one sidecar bootstrap JSON per replica
      control/       the control plane's state directory
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hyphal.identity.files import write_private

MESH_FILE = "mesh.json"


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """One process the supervisor started (the latest incarnation of it)."""

    name: str
    kind: str  # "control" | "sidecar" | "app"
    log: str
    command: tuple[str, ...]
    pid: int | None = None
    start_ticks: int | None = None
    state: str = "pending"  # pending|starting|running|ready|backoff|exited|completed|failed|stopped
    restarts: int = 0
    exit_code: int | None = None
    workload: str | None = None
    replica: int | None = None
    admin_port: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["command"] = list(self.command)
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> ProcessRecord:
        fields: dict[str, Any] = {k: d[k] for k in ProcessRecord.__dataclass_fields__ if k in d}
        fields["command"] = tuple(d.get("command") or ())
        return ProcessRecord(**fields)


@dataclass(frozen=True, slots=True)
class MeshState:
    """The content of mesh.json."""

    api: str
    state_dir: str
    supervisor_pid: int | None
    supervisor_start_ticks: int | None
    phase: str  # starting|ready|stopping|stopped|failed
    config_dir: str
    processes: tuple[ProcessRecord, ...] = ()
    replicas: tuple[dict[str, Any], ...] = ()
    control: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    isolated: dict[str, Any] | None = None  # hyphal.local.isolated.NetRecord (--isolated)

    def to_json(self) -> dict[str, Any]:
        return {
            "api": self.api,
            "state_dir": self.state_dir,
            "supervisor_pid": self.supervisor_pid,
            "supervisor_start_ticks": self.supervisor_start_ticks,
            "phase": self.phase,
            "error": self.error,
            "config_dir": self.config_dir,
            "control": self.control,
            "replicas": list(self.replicas),
            "processes": [p.to_json() for p in self.processes],
            "isolated": self.isolated,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> MeshState:
        return MeshState(
            api=str(d.get("api", "")),
            state_dir=str(d.get("state_dir", "")),
            supervisor_pid=d.get("supervisor_pid"),
            supervisor_start_ticks=d.get("supervisor_start_ticks"),
            phase=str(d.get("phase", "unknown")),
            error=d.get("error"),
            config_dir=str(d.get("config_dir", "")),
            control=dict(d.get("control") or {}),
            replicas=tuple(d.get("replicas") or ()),
            processes=tuple(ProcessRecord.from_json(p) for p in d.get("processes") or ()),
            isolated=d.get("isolated"),
        )

    def process(self, name: str) -> ProcessRecord | None:
        for p in self.processes:
            if p.name == name:
                return p
        return None


class RunDir:
    """Paths inside one run directory, and safe reads/writes of mesh.json."""

    __slots__ = ("root",)

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    @property
    def mesh_file(self) -> Path:
        return self.root / MESH_FILE

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def bootstrap(self) -> Path:
        return self.root / "bootstrap"

    @property
    def control_state(self) -> Path:
        return self.root / "control"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    def create(self) -> None:
        """Make the directory tree, owner-only (0700)."""
        for d in (self.root, self.logs, self.tokens, self.bootstrap):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)

    def write_private(self, path: Path, text: str) -> None:
        """Write a file readable by its owner only (0600), atomically."""
        write_private(path, text.encode(), durable=False)

    def write_state(self, state: MeshState) -> None:
        self.write_private(self.mesh_file, json.dumps(state.to_json(), indent=2) + "\n")

    def read_state(self) -> MeshState | None:
        """mesh.json, or None when no mesh was ever started here."""
        try:
            text = self.mesh_file.read_text()
        except FileNotFoundError:
            return None
        return MeshState.from_json(json.loads(text))

    def require_state(self) -> MeshState:
        state = self.read_state()
        if state is None:
            raise FileNotFoundError(
                f"no mesh found: {self.mesh_file} does not exist. Start one with `hyphal up DIR`"
                f" (or pass --run-dir to point at the run directory `up` used)."
            )
        return state
