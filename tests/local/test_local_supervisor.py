"""The supervisor's mechanics over stand-in planes: start-up, restarts, jobs, teardown, `down`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from local_helpers import HERE, STANDIN, mesh, workload

from hyphal.local import procs
from hyphal.local.backoff import Backoff
from hyphal.local.model import MeshSpec
from hyphal.local.plan import plan_run
from hyphal.local.ports import PortAllocator
from hyphal.local.rundir import RunDir
from hyphal.local.supervisor import Supervisor
from hyphal.local.teardown import stop_mesh


def _supervisor(spec: MeshSpec, run: Path, **kw: object) -> Supervisor:
    plan = plan_run(spec, run, PortAllocator())
    return Supervisor(plan, RunDir(run), hyphal_cmd=STANDIN, ready_timeout=15, grace=2,
                      out=lambda _line: None, **kw)  # type: ignore[arg-type]


def _pids(run: Path) -> list[tuple[int, int | None]]:
    state = RunDir(run).require_state()
    return [(p.pid, p.start_ticks) for p in state.processes if p.pid]


async def _eventually(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, Path]]:
    env_out = tmp_path / "env.json"
    spec = mesh(tmp_path, workload("web", env={"ENV_OUT": str(env_out)}))
    sup = _supervisor(spec, tmp_path / "run")
    try:
        await sup.start()
        yield sup, tmp_path
    finally:
        await sup.shutdown()
        procs.terminate_groups(_pids(tmp_path / "run"), 1.0)


async def test_start_writes_run_dir_and_starts_everything(started: tuple[Supervisor, Path]) -> None:
    sup, tmp = started
    run = RunDir(tmp / "run")
    state = run.require_state()
    assert state.phase == "ready"
    assert state.supervisor_pid == os.getpid()
    assert state.api == sup.plan.control.api
    names = {p.name: p for p in state.processes}
    assert set(names) == {"control", "web-0/sidecar", "web-0/app"}
    for p in names.values():
        assert p.pid is not None and procs.is_alive(p.pid, p.start_ticks), p
        assert os.getpgid(p.pid) == p.pid  # its own process group
    token = run.tokens / "web-0.token"
    assert token.read_text().strip() == "tok.shop.web"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    boot = json.loads((run.bootstrap / "web-0.json").read_text())
    assert boot["node"]["id"] == "web-0.shop"
    env = json.loads((tmp / "env.json").read_text())
    r = sup.plan.replicas[0]
    assert env["PORT"] == str(r.ports[0].app_port)
    assert env["HTTP_PROXY"] == f"http://127.0.0.1:{r.outbound_http_port}"
    assert (run.logs / "web-0.sidecar.log").exists() and (run.logs / "control.log").exists()


async def test_shutdown_stops_every_process(started: tuple[Supervisor, Path]) -> None:
    sup, tmp = started
    pids = _pids(tmp / "run")
    await sup.shutdown()
    assert all(not procs.group_alive(p, s) for p, s in pids)
    state = RunDir(tmp / "run").require_state()
    assert state.phase == "stopped"
    assert {p.state for p in state.processes} == {"stopped"}


async def test_crashing_app_is_restarted_with_backoff(tmp_path: Path) -> None:
    spec = mesh(tmp_path, workload("flaky", env={"MODE": "crash-later"}))
    sup = _supervisor(spec, tmp_path / "run", backoff=Backoff(base=0.05, cap=0.2))
    try:
        await sup.start()
        run = RunDir(tmp_path / "run")

        def restarted() -> bool:
            rec = run.require_state().process("flaky-0/app")
            return rec is not None and rec.restarts >= 2

        await _eventually(restarted)
        rec = run.require_state().process("flaky-0/app")
        assert rec is not None and rec.exit_code in (None, 1)
    finally:
        await sup.shutdown()
        procs.terminate_groups(_pids(tmp_path / "run"), 1.0)


async def test_job_exit_stops_its_sidecar_and_reports_the_code(tmp_path: Path) -> None:
    spec = mesh(tmp_path, workload("job", env={"MODE": "exit3"}, policy="Never"))
    sup = _supervisor(spec, tmp_path / "run")
    try:
        code = await asyncio.wait_for(sup.run(), timeout=30)
    finally:
        procs.terminate_groups(_pids(tmp_path / "run"), 1.0)
    assert code == 3
    assert sup.job_exit_codes == {"job-0": 3}
    state = RunDir(tmp_path / "run").require_state()
    app, side = state.process("job-0/app"), state.process("job-0/sidecar")
    assert app is not None and app.state == "failed" and app.exit_code == 3
    assert side is not None and side.state == "stopped"
    assert not procs.group_alive(side.pid or 0, side.start_ticks)


def test_down_kills_every_pid_after_the_supervisor_crashed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    sup = subprocess.Popen([sys.executable, str(HERE / "run_supervisor.py"), str(run),
                            str(tmp_path)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while (RunDir(run).read_state() is None
               or RunDir(run).require_state().phase != "ready"):
            assert sup.poll() is None, "supervisor died"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(sup.pid, signal.SIGKILL)  # the supervisor crashes; its children live on
        sup.wait(timeout=10)
        pids = _pids(run)
        assert len(pids) == 7  # control + 3 replicas x (sidecar, app)
        assert all(procs.group_alive(p, s) for p, s in pids)
        report = stop_mesh(RunDir(run), grace=2)
        assert all(not procs.group_alive(p, s) for p, s in pids)
        assert len(report.stopped) == 7 and report.supervisor_pid is None
        again = stop_mesh(RunDir(run), grace=2)  # idempotent
        assert again.stopped == () and again.lines() == ["nothing was running"]
    finally:
        if sup.poll() is None:
            sup.kill()
        procs.terminate_groups(_pids(run) if RunDir(run).read_state() else [], 1.0)


def test_down_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        ticks = procs.start_ticks(stranger.pid)
        assert ticks is not None
        assert not procs.signal_group(stranger.pid, ticks + 1, signal.SIGTERM)
        time.sleep(0.1)
        assert stranger.poll() is None
        assert procs.signal_group(stranger.pid, ticks, signal.SIGTERM)
        assert stranger.wait(timeout=5) == -signal.SIGTERM
    finally:
        stranger.kill()
        stranger.wait()


def test_terminate_groups_kills_a_whole_tree() -> None:
    tree = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        time.sleep(0.2)
        members = procs.group_members(tree.pid)
        assert len(members) == 3
        procs.terminate_groups([(tree.pid, procs.start_ticks(tree.pid))], grace=2)
        tree.wait(timeout=5)
        assert all(not procs.is_alive(m) for m in members)
    finally:
        tree.kill()
        tree.wait()
