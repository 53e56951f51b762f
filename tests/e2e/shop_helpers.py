"""Shared pieces of the shop/job e2e tests: run the real `hyphal` CLI, bring a mesh up and down."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hyphal.local import procs
from hyphal.local.rundir import MeshState, RunDir

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"

needs_planes = pytest.mark.skipif(
    importlib.util.find_spec("hyphal.cli.control") is None
    or importlib.util.find_spec("hyphal.cli.proxy") is None,
    reason="`hyphal control` / `hyphal proxy` have not landed yet",
)


def hyphal(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyphal", *args], check=False, cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout)


def status(run: Path) -> dict[str, Any]:
    out = hyphal("status", "-o", "json", "--run-dir", str(run))
    assert out.returncode == 0, out.stderr
    view: dict[str, Any] = json.loads(out.stdout)
    return view


@contextmanager
def mesh_up(config_dir: Path, run: Path, *extra: str) -> Iterator[MeshState]:
    """`hyphal up` (daemonized); always `hyphal down` and kill anything left, even on failure."""
    try:
        up = hyphal("up", str(config_dir), "--run-dir", str(run), *extra)
        assert up.returncode == 0, f"hyphal up failed:\n{up.stdout}\n{up.stderr}"
        yield RunDir(run).require_state()
    finally:
        hyphal("down", "--run-dir", str(run))
        state = RunDir(run).read_state()
        if state is not None:
            left = [(p.pid, p.start_ticks) for p in state.processes if p.pid]
            if state.supervisor_pid:
                left.append((state.supervisor_pid, state.supervisor_start_ticks))
            procs.terminate_groups(left, 1.0)
