"""Subprocess: grpcio's xDS client calls xds:///TARGET N times and prints answer counts as JSON."""

from __future__ import annotations

import json
import sys
from collections import Counter

import grpc


def main() -> None:
    target, calls = sys.argv[1], int(sys.argv[2])
    with grpc.insecure_channel(f"xds:///{target}") as channel:
        hello = channel.unary_unary("/demo.Greeter/Hello")
        hello(b"", timeout=15, wait_for_ready=True)
        counts = Counter(hello(b"", timeout=5).decode() for _ in range(calls))
        print(json.dumps(dict(counts)), flush=True)
        # Stay connected until the test has inspected the ADS stream (it closes our stdin).
        sys.stdin.readline()


if __name__ == "__main__":
    main()
