"""Process identity and teardown: start times from /proc, group kills that never hit a stranger.

Every child is started in its own session (so its own process group, pgid == pid). We record
its pid with its start time (field 22 of /proc/PID/stat); before signalling we check the start
time again, so a pid the kernel has since reused for someone else's process is left alone.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    pgid: int
    start_ticks: int
    state: str


def proc_stat(pid: int) -> ProcStat | None:
    """/proc/PID/stat parsed, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2:].split()
    # rest[0] is field 3 (state); pgrp is field 5; starttime is field 22.
    return ProcStat(pid=pid, pgid=int(rest[2]), start_ticks=int(rest[19]), state=rest[0])


def start_ticks(pid: int) -> int | None:
    st = proc_stat(pid)
    return None if st is None else st.start_ticks


def is_alive(pid: int, expected_start: int | None = None) -> bool:
    """True when PID runs (not a zombie) and, if given, started at `expected_start`."""
    st = proc_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return False
    return expected_start is None or st.start_ticks == expected_start


def group_members(pgid: int, not_before: int | None = None) -> list[int]:
    """Live pids in process group `pgid` (started no earlier than `not_before`)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = proc_stat(int(entry))
        if st is None or st.pgid != pgid or st.state in ("Z", "X"):
            continue
        if not_before is not None and st.start_ticks < not_before:
            continue
        out.append(st.pid)
    return out


def ours(pid: int, expected_start: int | None) -> bool:
    """The group led by PID is still the one we started (the leader may have died already)."""
    st = proc_stat(pid)
    if st is None:
        return bool(group_members(pid, expected_start))
    # A different start time means the pid was reused by an unrelated process.
    return expected_start is None or st.start_ticks == expected_start


def signal_group(pid: int, expected_start: int | None, sig: int) -> bool:
    """Send `sig` to the process group PID leads, if it is still ours. True when sent."""
    if not ours(pid, expected_start):
        return False
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        try:
            os.kill(pid, sig)
            return True
        except OSError:
            return False


def group_alive(pid: int, expected_start: int | None) -> bool:
    st = proc_stat(pid)
    if (st is not None and st.state not in ("Z", "X")
            and (expected_start is None or st.start_ticks == expected_start)):
        return True
    return bool(group_members(pid, expected_start))


def wait_gone(targets: Iterable[tuple[int, int | None]], timeout: float) -> list[int]:
    """Wait until every (pid, start) group is gone; return the pids still alive at the deadline."""
    pending = list(targets)
    deadline = time.monotonic() + timeout
    while True:
        pending = [(p, s) for p, s in pending if group_alive(p, s)]
        if not pending or time.monotonic() >= deadline:
            return [p for p, _ in pending]
        time.sleep(0.05)


def terminate_groups(
    targets: Iterable[tuple[int, int | None]], grace: float = 5.0
) -> list[int]:
    """SIGTERM each group, wait up to `grace` seconds, SIGKILL the rest; return pids signalled."""
    targets = [(p, s) for p, s in targets if group_alive(p, s)]
    sent = [p for p, s in targets if signal_group(p, s, signal.SIGTERM)]
    left = wait_gone(targets, grace)
    if left:
        by_pid = dict(targets)
        for p in left:
            signal_group(p, by_pid[p], signal.SIGKILL)
        wait_gone([(p, by_pid[p]) for p in left], 2.0)
    return sent
