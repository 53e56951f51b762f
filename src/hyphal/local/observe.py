"""What `hyphal status` shows: each replica's processes, health, identity, cert and ACKed config.

Sources: mesh.json (pids, states, restarts, exit codes, written by the supervisor), each
sidecar's admin port (`/ready`, `/config_dump`), and the control plane's
`/api/v1/status`. Every remote read is best-effort: a part that does not answer shows as
such instead of failing the whole report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from hyphal.control.client import ADMIN_TOKEN_FILE, ClientError, read_admin_token
from hyphal.local import configdump, procs
from hyphal.local.control import local_api
from hyphal.local.probe import HttpError, is_ready, request
from hyphal.local.rundir import MeshState, ProcessRecord


class NoSuchReplica(LookupError):
    """The workload or replica asked for is not in this mesh."""


@dataclass(frozen=True, slots=True)
class ProcView:
    pid: int | None
    state: str
    restarts: int
    exit_code: int | None
    alive: bool


@dataclass(frozen=True, slots=True)
class ReplicaView:
    workload: str
    namespace: str
    replica: int
    identity: str
    app: ProcView
    sidecar: ProcView
    ready: bool
    cert_expiry: str | None
    config_versions: dict[str, str]
    # the control plane's view: SYNCED, STALE (sent, not yet ACKed), NACKED, NOT CONNECTED
    sync: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _proc(rec: ProcessRecord | None) -> ProcView:
    if rec is None:
        return ProcView(None, "absent", 0, None, False)
    alive = rec.pid is not None and procs.is_alive(rec.pid, rec.start_ticks)
    state = rec.state
    if not alive and state in ("running", "ready", "starting"):
        state = "dead"
    return ProcView(rec.pid, state, rec.restarts, rec.exit_code, alive)


def find_replica(state: MeshState, workload: str, replica: int | None) -> dict[str, Any]:
    """The replica entry of mesh.json for WORKLOAD (replica 0 unless given)."""
    matches = [r for r in state.replicas if r["workload"] == workload]
    if not matches:
        known = sorted({r["workload"] for r in state.replicas})
        raise NoSuchReplica(f"no workload {workload!r} in this mesh; known: {', '.join(known)}")
    index = 0 if replica is None else replica
    for r in matches:
        if r["replica"] == index:
            return r
    raise NoSuchReplica(
        f"{workload} has replicas 0..{len(matches) - 1}; there is no replica {index}"
    )


def admin_get(r: dict[str, Any], path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET `path` on a replica's sidecar admin port (127.0.0.1 on the host, or inside the
    replica's network namespace in isolated mode, where the admin port stays private)."""
    port = int(r["admin_port"])
    netns = r.get("netns")
    if netns:
        from hyphal.local.isolated import http_get

        try:
            return http_get(str(netns), port, path, timeout)
        except (OSError, ValueError, IndexError) as exc:
            raise HttpError(f"GET {path} on :{port} in netns {netns}: {exc}") from exc
    return request(f"http://127.0.0.1:{port}{path}", timeout=timeout)


def config_dump(r: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    """A replica's sidecar `/config_dump` (see `admin_get` for where it is read)."""
    status, body = admin_get(r, "/config_dump", timeout)
    if status != 200:
        raise HttpError(f"/config_dump on :{r['admin_port']}: HTTP {status}")
    dump = json.loads(body)
    if not isinstance(dump, dict):
        raise HttpError(f"/config_dump on :{r['admin_port']} is not a JSON object")
    return dump


def _ready(r: dict[str, Any]) -> bool:
    try:
        return admin_get(r, "/ready", 1.0)[0] == 200
    except HttpError:
        return False


def sync_state(control: dict[str, Any], node_id: str) -> str:
    """Whether the control plane sees node_id as up to date (Istio's `proxy-status`)."""
    if "error" in control:
        return "UNKNOWN"
    conns = [c for c in ((control.get("xds") or {}).get("connections") or [])
             if c.get("node_id") == node_id]
    if not conns:
        return "NOT CONNECTED"
    types = conns[-1].get("types") or []
    if any(t.get("last_nack") for t in types):
        return "NACKED"
    if any(t.get("sent_version") != t.get("acked_version") for t in types):
        return "STALE"
    return "SYNCED"


def replica_view(state: MeshState, r: dict[str, Any],
                 control: dict[str, Any] | None = None) -> ReplicaView:
    key = r["key"]
    sidecar = _proc(state.process(f"{key}/sidecar"))
    ready = sidecar.alive and _ready(r)
    dump: dict[str, Any] | None = None
    if sidecar.alive:
        try:
            dump = config_dump(r)
        except (HttpError, ValueError):
            dump = None
    return ReplicaView(
        workload=r["workload"], namespace=r["namespace"], replica=int(r["replica"]),
        identity=r["identity"], app=_proc(state.process(f"{key}/app")), sidecar=sidecar,
        ready=ready, cert_expiry=configdump.cert_expiry(dump) if dump else None,
        config_versions=configdump.versions(dump) if dump else {},
        sync=sync_state(control or {"error": "not asked"}, f"{key}.{r['namespace']}"),
    )


def control_status(state: MeshState) -> dict[str, Any]:
    """The control plane's own view (`/api/v1/status`), or {"error": ...}."""
    rec = state.process("control")
    if rec is None or rec.pid is None or not procs.is_alive(rec.pid, rec.start_ticks):
        return {"error": "control plane is not running"}
    try:
        token = read_admin_token(state.state_dir)
    except ClientError as exc:
        return {"error": str(exc)}
    if not token:
        return {"error": f"cannot read the admin token: no {ADMIN_TOKEN_FILE} in {state.state_dir}"}
    try:
        body = local_api(state.api, token, timeout=2.0).get("/api/v1/status")
    except (ClientError, ValueError) as exc:
        return {"error": str(exc)}
    return body if isinstance(body, dict) else {"status": body}


def mesh_view(state: MeshState) -> dict[str, Any]:
    """Everything `hyphal status -o json` prints."""
    control = state.process("control")
    cstatus = control_status(state)
    return {
        "phase": state.phase,
        "api": state.api,
        "supervisor": {"pid": state.supervisor_pid,
                       "alive": bool(state.supervisor_pid and procs.is_alive(
                           state.supervisor_pid, state.supervisor_start_ticks))},
        "control": {**asdict(_proc(control)),
                    "ready": bool(control and is_ready(f"{state.api}/ready")),
                    "status": cstatus},
        "replicas": [replica_view(state, r, cstatus).to_json() for r in state.replicas],
    }
