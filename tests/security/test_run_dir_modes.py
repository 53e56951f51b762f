"""`hyphal up`'s run directory is private whatever the umask: tokens, bootstrap files, logs and
mesh.json 0600, directories 0700 (the supervisor over stand-in planes, umask 0)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "local"))
from local_helpers import STANDIN, mesh, workload

from hyphal.local import procs
from hyphal.local.plan import plan_run
from hyphal.local.ports import PortAllocator
from hyphal.local.rundir import RunDir
from hyphal.local.supervisor import Supervisor

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def umask_0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


async def test_run_dir_is_private_under_umask_0(tmp_path: Path, umask_0: None) -> None:
    run = tmp_path / "run"
    plan = plan_run(mesh(tmp_path, workload("web")), run, PortAllocator())
    sup = Supervisor(plan, RunDir(run), hyphal_cmd=STANDIN, ready_timeout=15, grace=2,
                     out=lambda _line: None)
    try:
        await sup.start()
        loose = []
        for path in [run, *run.rglob("*")]:
            # control/ is the stand-in control plane's; the real one: test_state_dir.py
            if path.is_symlink() or path.is_socket() or "control" in path.relative_to(run).parts:
                continue
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                loose.append(f"{path.relative_to(run)}: {mode:o}")
        assert any(p.suffix == ".json" for p in (run / "bootstrap").iterdir())
        assert loose == [], loose
    finally:
        await sup.shutdown()
        state = RunDir(run).read_state()
        if state is not None:
            procs.terminate_groups([(p.pid, p.start_ticks) for p in state.processes if p.pid],
                                   1.0)
