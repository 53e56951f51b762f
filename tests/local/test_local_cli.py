"""The CLI end to end over stand-in planes: `up` daemonizes and returns when ready; status, logs,
proxy-config read the run; `down` leaves no process behind and is idempotent."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_helpers import APP, HERE, STANDIN

from hyphal.local import procs
from hyphal.local.rundir import RunDir

MESH = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop}
spec:
  labels: {app: web}
  serviceAccount: web
  replicas: 2
  ports: [{name: http, port: 8080}]
  command: [%(python)s, %(app)s]
  env: {GREETING: hello}
"""


def hyphal(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyphal", *args], check=False, cwd=cwd,
                          capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def mesh_up(tmp_path: Path) -> Iterator[Path]:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "mesh.yaml").write_text(MESH % {"python": sys.executable, "app": APP})
    cmd = shlex.join(STANDIN)
    try:
        up = hyphal("up", "cfg", "--hyphal-cmd", cmd, "--ready-timeout", "20", cwd=tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "control plane ready" in up.stdout
        assert "web-0" in up.stdout and "spiffe://cluster.local/ns/shop/sa/web" in up.stdout
        yield tmp_path
    finally:
        state = RunDir(tmp_path / ".hyphal").read_state()
        hyphal("down", cwd=tmp_path)
        if state is not None:  # belt and braces: never leave a process behind
            procs.terminate_groups([(p.pid, p.start_ticks) for p in state.processes if p.pid], 1)


def test_up_status_logs_down(mesh_up: Path) -> None:
    tmp = mesh_up
    state = RunDir(tmp / ".hyphal").require_state()
    assert state.phase == "ready"
    assert state.supervisor_pid is not None and procs.is_alive(state.supervisor_pid)
    assert os.getsid(state.supervisor_pid) == state.supervisor_pid  # daemonized: own session
    every = [(p.pid, p.start_ticks) for p in state.processes if p.pid]
    assert len(every) == 5

    status = hyphal("status", "-o", "json", cwd=tmp)
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert [(r["workload"], r["replica"]) for r in view["replicas"]] == [("web", 0), ("web", 1)]
    assert all(r["app"]["alive"] and r["sidecar"]["alive"] and r["ready"]
               for r in view["replicas"])
    table = hyphal("status", cwd=tmp)
    assert "web" in table.stdout and "IDENTITY" in table.stdout

    logs = hyphal("logs", "web", "--replica", "1", "--sidecar", cwd=tmp)
    assert logs.returncode == 0 and "standin proxy listening" in logs.stdout
    missing = hyphal("logs", "nope", cwd=tmp)
    assert missing.returncode == 1 and "no workload 'nope'" in missing.stderr

    again = hyphal("up", "cfg", cwd=tmp)
    assert again.returncode == 1 and "already running" in again.stderr

    down = hyphal("down", cwd=tmp)
    assert down.returncode == 0, down.stderr
    assert f"stopped supervisor (pid {state.supervisor_pid})" in down.stdout
    assert not procs.is_alive(state.supervisor_pid, state.supervisor_start_ticks)
    assert all(not procs.group_alive(p, s) for p, s in every)
    assert hyphal("down", cwd=tmp).stdout.strip() == "nothing was running"


def test_status_without_a_mesh_says_how_to_start_one(tmp_path: Path) -> None:
    out = hyphal("status", cwd=tmp_path)
    assert out.returncode == 1 and "hyphal up DIR" in out.stderr
    assert hyphal("down", cwd=tmp_path).stdout.strip() == "no mesh here: nothing to stop"


def test_up_reports_config_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: hyphal.dev/v1alpha1\nkind: Workload\n"
                                       "metadata: {name: x}\nspec: {replicas: -1}\n")
    out = hyphal("up", str(tmp_path), "--run-dir", str(tmp_path / "run"), cwd=HERE)
    assert out.returncode == 2 and "cannot load" in out.stderr and "replicas" in out.stderr


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "mesh.yaml").write_text(MESH % {"python": sys.executable, "app": APP})
    run = RunDir(tmp_path / ".hyphal")
    up = subprocess.Popen([sys.executable, "-m", "hyphal", "up", "cfg", "--foreground",
                           "--hyphal-cmd", shlex.join(STANDIN)], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids: list[tuple[int, int | None]] = []
    try:
        deadline = time.monotonic() + 30
        while (state := run.read_state()) is None or state.phase != "ready":
            assert up.poll() is None, up.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pids = [(p.pid, p.start_ticks) for p in state.processes if p.pid]
        assert len(pids) == 5 and state.supervisor_pid == up.pid
        up.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        out, _ = up.communicate(timeout=30)
        assert up.returncode == 0, out
        assert "WORKLOAD" in out and "mesh stopped" in out
        assert all(not procs.group_alive(p, s) for p, s in pids)
        assert run.require_state().phase == "stopped"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        procs.terminate_groups(pids, 1.0)
