"""`hyphal down`: stop a local mesh from its mesh.json, whether or not its supervisor is alive.

The supervisor is asked first (SIGTERM: it drains apps, then sidecars, then the control plane).
Whatever is still running afterwards — every pid mesh.json names, verified by start time so a
reused pid is never touched — is stopped here: sidecars get `/quitquitquit`, then SIGTERM to
their process group, then SIGKILL after the grace period.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, replace

from hyphal.local import procs
from hyphal.local.probe import HttpError, request
from hyphal.local.rundir import MeshState, ProcessRecord, RunDir

_ORDER = {"app": 0, "sidecar": 1, "control": 2}


@dataclass(frozen=True, slots=True)
class DownReport:
    """What `down` found and stopped."""

    found: bool
    supervisor_pid: int | None
    stopped: tuple[str, ...]  # "name (pid N)" for every process that was running

    def lines(self) -> list[str]:
        if not self.found:
            return ["no mesh here: nothing to stop"]
        out = []
        if self.supervisor_pid is not None:
            out.append(f"stopped supervisor (pid {self.supervisor_pid})")
        out += [f"stopped {s}" for s in self.stopped]
        if not out:
            out.append("nothing was running")
        return out


def _live(state: MeshState) -> list[ProcessRecord]:
    return [p for p in state.processes
            if p.pid is not None and procs.group_alive(p.pid, p.start_ticks)]


def stop_mesh(run_dir: RunDir, grace: float = 5.0, supervisor_timeout: float = 30.0) -> DownReport:
    state = run_dir.read_state()
    if state is None:
        return DownReport(found=False, supervisor_pid=None, stopped=())
    running = _live(state)
    ordered = sorted(running, key=lambda p: _ORDER.get(p.kind, 9))
    stopped = [f"{p.name} (pid {p.pid})" for p in ordered]
    sup_pid: int | None = None
    pid, ticks = state.supervisor_pid, state.supervisor_start_ticks
    if pid is not None and pid != os.getpid() and procs.is_alive(pid, ticks):
        sup_pid = pid
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + supervisor_timeout
        while procs.is_alive(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.05)
        if procs.is_alive(pid, ticks):
            os.kill(pid, signal.SIGKILL)
    # Whatever the supervisor left (or everything, if it had died): stop it here.
    state = run_dir.read_state() or state
    left = sorted(_live(state), key=lambda p: _ORDER.get(p.kind, 9))
    for kind in ("app", "sidecar", "control"):
        group = [p for p in left if p.kind == kind]
        if kind == "sidecar":
            for p in group:
                if p.admin_port:
                    try:
                        request(f"http://127.0.0.1:{p.admin_port}/quitquitquit", "POST", b"",
                                timeout=1.0)
                    except HttpError:
                        pass
            procs.wait_gone([(p.pid, p.start_ticks) for p in group if p.pid], min(grace, 2.0))
        procs.terminate_groups([(p.pid, p.start_ticks) for p in group if p.pid], grace)
    for p in left:
        if p.name not in {s.split(" (")[0] for s in stopped}:
            stopped.append(f"{p.name} (pid {p.pid})")
    if state.isolated:  # namespaces, veths, bridge, hosts dirs: even after a crashed `up`
        from hyphal.local.isolated import NetRecord, teardown

        stopped += [f"isolated network: {x}" for x in
                    teardown(NetRecord.from_json(state.isolated))]
    final = replace(
        state,
        phase="stopped",
        processes=tuple(
            replace(p, state="stopped") if p.state not in ("completed", "failed", "stopped") else p
            for p in state.processes
        ),
    )
    run_dir.write_state(final)
    return DownReport(found=True, supervisor_pid=sup_pid, stopped=tuple(stopped))
