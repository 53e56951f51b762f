"""A job (restartPolicy: Never) runs through the mesh, exits, and its sidecar exits with it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from shop_helpers import SHOP, mesh_up, needs_planes, status

from hyphal.local import procs
from hyphal.local.rundir import RunDir

pytestmark = [pytest.mark.e2e, needs_planes, pytest.mark.timeout(180)]

JOB = """\
import json, sys, time, urllib.error, urllib.request
deadline = time.monotonic() + 15
while True:
    try:
        with urllib.request.urlopen("http://echo:8080/product/7", timeout=5) as r:
            body = json.loads(r.read())
            break
    except (urllib.error.URLError, OSError) as exc:
        if time.monotonic() > deadline:
            print("job: echo never answered:", exc, flush=True)
            sys.exit(3)
        time.sleep(0.2)
print("job: echo answered", body, flush=True)
sys.exit(7 if body.get("version") == "v9" and "URI=spiffe://" in body.get("caller", "") else 4)
"""

MESH = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: echo, namespace: jobs}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: echo, namespace: jobs}
spec:
  labels: {app: echo}
  serviceAccount: echo
  ports: [{name: http, port: 8080}]
  command: [%(python)s, %(product)s]
  env: {VERSION: v9}
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: once, namespace: jobs}
spec:
  labels: {app: once}
  serviceAccount: once
  restartPolicy: Never
  command: [%(python)s, job.py]
"""


def test_job_finishes_and_its_sidecar_exits_with_it(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "job.py").write_text(JOB)
    (cfg / "mesh.yaml").write_text(MESH % {"python": sys.executable,
                                          "product": SHOP / "apps" / "product.py"})
    run = tmp_path / "run"
    with mesh_up(cfg, run):
        deadline = time.monotonic() + 40
        while True:
            state = RunDir(run).require_state()
            app = state.process("once-0/app")
            side = state.process("once-0/sidecar")
            assert app is not None and side is not None
            if app.state in ("completed", "failed") and side.state == "stopped":
                break
            assert time.monotonic() < deadline, (app, side)
            time.sleep(0.1)
        assert app.exit_code == 7, (RunDir(run).logs / "once-0.log").read_text()
        assert app.state == "failed" and app.restarts == 0  # Never: not restarted
        assert side.pid is not None and not procs.group_alive(side.pid, side.start_ticks)
        view = {r["workload"]: r for r in status(run)["replicas"]}
        assert view["once"]["app"]["exit_code"] == 7
        assert view["once"]["sidecar"]["state"] == "stopped"
        assert view["echo"]["app"]["alive"] and view["echo"]["ready"]  # the rest keeps running
