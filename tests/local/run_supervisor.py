"""Runs a Supervisor over stand-in planes in its own process (for the `down`-after-crash test).

usage: run_supervisor.py RUN_DIR CONFIG_DIR
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_helpers import STANDIN, mesh, workload

from hyphal.local.plan import plan_run
from hyphal.local.ports import PortAllocator
from hyphal.local.rundir import RunDir
from hyphal.local.supervisor import Supervisor

run_dir, config_dir = Path(sys.argv[1]), Path(sys.argv[2])
spec = mesh(config_dir, workload("a"), workload("b", replicas=2))
plan = plan_run(spec, run_dir, PortAllocator())
sup = Supervisor(plan, RunDir(run_dir), hyphal_cmd=STANDIN, ready_timeout=20)
sys.exit(asyncio.run(sup.run()))
