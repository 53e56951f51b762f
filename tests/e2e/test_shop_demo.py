"""`python -m hyphal.demo examples/shop` with DEMO_ONCE=1: prints the story, stops the mesh, leaves nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from shop_helpers import REPO, needs_planes

from hyphal.local import procs
from hyphal.local.rundir import RunDir

pytestmark = [pytest.mark.e2e, needs_planes, pytest.mark.timeout(180)]


def test_demo_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "DEMO_ONCE": "1"}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "hyphal.demo", "examples/shop", "--run-dir", str(run),
             "--calls", "400"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=150, check=False)
    finally:
        state = RunDir(run).read_state()
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    m = re.search(r"product: v1 (\d+) \(([\d.]+)%\), v2 (\d+) \(([\d.]+)%\) over 400 calls", text)
    assert m, text
    assert int(m.group(1)) + int(m.group(3)) == 400 and 88 <= float(m.group(2)) <= 99.5
    assert "frontend -> order:        caller spiffe://cluster.local/ns/shop/sa/frontend" in text
    assert "order    -> payment:      caller spiffe://cluster.local/ns/shop/sa/order" in text
    assert "allowed: order -> payment POST /process: 200" in text
    assert "denied:  frontend -> payment POST /process: 403, x-hyphal-reason: rbac_denied" in text
    assert "stopped supervisor" in text
    assert state is not None
    pids = [(p.pid, p.start_ticks) for p in state.processes if p.pid]
    assert len(pids) == 11
    left = [p for p, s in pids if procs.group_alive(p, s)]
    procs.terminate_groups([(p, s) for p, s in pids if p in left], 1.0)
    assert not left, f"orphans after the demo: {left}"
