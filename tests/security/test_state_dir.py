"""The control plane's state directory: every file 0600 and every directory 0700 whatever the
process umask, and a second `hyphal control` on the same state directory refuses to start
(a lock) instead of rewriting ports.json or racing the first over keys and resources."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)
HYPHAL = [sys.executable, "-m", "hyphal"]


def _spawn(state: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    # The child inherits umask 0 from this process for the moment of the spawn. Not
    # `preexec_fn`: it forces a plain fork that runs Python's at-fork handlers in the child,
    # and gRPC's (loaded in this process by other tests, with threads running) then crashed
    # the child before its exec ("Epoll1Poller ... epoll_wait error: Bad file descriptor").
    old = os.umask(0)
    try:
        with log.open("ab") as out:
            return subprocess.Popen(
                [*HYPHAL, "control", "--config-dir", str(config), "--state-dir", str(state),
                 "--xds-port", "0", "--xds-plaintext-port", "0", "--ca-port", "0",
                 "--api-port", "0"],
                stdout=out, stderr=subprocess.STDOUT)
    finally:
        os.umask(old)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def control(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    state, config = tmp_path / "state", tmp_path / "config"
    config.mkdir()
    proc = _spawn(state, config, tmp_path / "control-1.log")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if json.loads((state / "ports.json").read_text()).get("pid") == proc.pid:
                    break
            except (OSError, ValueError):
                pass
            assert proc.poll() is None, (tmp_path / "control-1.log").read_text()
            assert time.monotonic() < deadline, "hyphal control did not write ports.json"
            time.sleep(0.1)
        yield proc, state, config
    finally:
        _stop(proc)


def _snapshot(state: Path) -> dict[str, str]:
    return {str(p.relative_to(state)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(state.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_state_files_are_private_under_umask_0(
    control: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    _, state, _ = control
    loose = []
    for path in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode & 0o077 or (path.is_dir() and mode != want):
            loose.append(f"{path.relative_to(state)}: {mode:o}")
    assert loose == []
    assert (state / "ca" / "root-key.pem").exists() and (state / "admin-token").exists()


def test_a_second_control_on_the_same_state_dir_refuses_and_changes_nothing(
    control: tuple[subprocess.Popen[bytes], Path, Path], tmp_path: Path,
) -> None:
    first, state, config = control
    before = _snapshot(state)
    second = _spawn(state, config, tmp_path / "control-2.log")
    try:
        code = second.wait(20)
    finally:
        _stop(second)
    log = (tmp_path / "control-2.log").read_text()
    assert code != 0
    assert "another hyphal control" in log and str(first.pid) in log
    assert first.poll() is None
    assert _snapshot(state) == before
    assert json.loads((state / "ports.json").read_text())["pid"] == first.pid
