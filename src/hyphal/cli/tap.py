"""`hyphal tap WORKLOAD`: the live request stream of a workload's sidecars, from the access log.

Every sidecar writes one JSON access-log line per request (telemetry/accesslog.py) to its log
in the local mesh's run directory; tap reads those lines from every replica of the workload
(or one, `--replica`), keeps those newer than `--since`, prints one line per request, and with
`-f` keeps following. Lines that are not access-log entries (the sidecar's own log) are skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tap", help="watch a workload's requests as its sidecars see them")
    p.add_argument("workload", metavar="WORKLOAD")
    p.add_argument("--replica", type=int, default=None, help="only this replica (default: all)")
    p.add_argument("--since", default=None,
                   help="how far back to start, e.g. 30s, 5m (default: 5m, and never before "
                        "this mesh was started, so an earlier run's requests stay out)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new requests")
    p.add_argument("-o", "--output", choices=("line", "json"), default="line")
    p.add_argument("--max", type=int, default=0, metavar="N",
                   help="stop after N requests (0: no limit)")
    p.add_argument("--run-dir", default=".hyphal",
                   help="run directory `up` used (default: .hyphal)")
    p.set_defaults(func=run)


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `250ms`, `1h` → seconds; ValueError saying the accepted forms."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"--since {text!r}: use a number with ms, s, m or h (e.g. 30s)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def entry_of(line: bytes) -> dict[str, Any] | None:
    """An access-log entry, or None for any other line."""
    line = line.strip()
    if not line.startswith(b"{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or "request_id" not in entry or "status" not in entry:
        return None
    return entry


def _epoch(entry: dict[str, Any]) -> float:
    try:
        text = str(entry["start_time"]).replace("Z", "+00:00")
        return dt.datetime.fromisoformat(text).timestamp()
    except (KeyError, ValueError):
        return 0.0


def format_entry(entry: dict[str, Any], replica: str) -> str:
    """One line, in the spirit of `linkerd tap`: direction, peer, request, response."""
    direction = "in " if str(entry.get("listener", "")).startswith("inbound") else "out"
    peer = entry.get("downstream_identity") if direction == "in " else entry.get("cluster")
    rt = entry.get("upstream_service_time_ms")
    return (f"{entry.get('start_time')} {replica} {direction} "
            f"{entry.get('method')} {entry.get('authority')}{entry.get('path')} "
            f":status={entry.get('status')} reason={entry.get('reason')} "
            f"duration={entry.get('duration_ms')}ms upstream={rt if rt is not None else '-'}ms "
            f"peer={peer or '-'} id={entry.get('request_id')}")


class _Follower:
    """Complete lines appended to one file since the last read (a partial line waits)."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.fh: IO[bytes] | None = None
        self.pending = b""

    def lines(self) -> Iterator[bytes]:
        if self.fh is None:
            if not self.path.exists():
                return
            self.fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        data = self.pending + self.fh.read()
        *complete, self.pending = data.split(b"\n")
        yield from complete

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def started_at(start_ticks: int | None, proc: Path = Path("/proc")) -> float | None:
    """Wall-clock time a process started, from its start time in clock ticks since boot
    (/proc/<pid>/stat field 22) and the boot time; None when either is unknown."""
    if start_ticks is None:
        return None
    try:
        for line in (proc / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return None


def run(args: argparse.Namespace) -> int:
    from hyphal.local.observe import NoSuchReplica, find_replica
    from hyphal.local.rundir import RunDir

    try:
        since = parse_duration(args.since or "5m")
        state = RunDir(args.run_dir).require_state()
        if args.replica is not None:
            replicas = [find_replica(state, args.workload, args.replica)]
        else:
            replicas = [r for r in state.replicas if r["workload"] == args.workload]
            if not replicas:
                find_replica(state, args.workload, None)  # raises with the known names
    except (ValueError, FileNotFoundError, NoSuchReplica) as exc:
        print(f"hyphal tap: {exc}", file=sys.stderr)
        return 1
    cutoff = time.time() - since
    if args.since is None:  # only this run's requests, unless asked for a window explicitly
        cutoff = max(cutoff, started_at(state.supervisor_start_ticks) or cutoff)
    followers = [_Follower(f"{r['workload']}-{r['replica']}", Path(r["sidecar_log"]))
                 for r in replicas]
    printed = 0
    try:
        while True:
            fresh = False
            for f in followers:
                for raw in f.lines():
                    entry = entry_of(raw)
                    if entry is None or _epoch(entry) < cutoff:
                        continue
                    fresh = True
                    out = json.dumps({"replica": f.name, **entry}) if args.output == "json" \
                        else format_entry(entry, f.name)
                    print(out, flush=True)
                    printed += 1
                    if args.max and printed >= args.max:
                        return 0
            if not args.follow:
                return 0
            if not fresh:
                time.sleep(0.2)
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    finally:
        for f in followers:
            f.close()
