"""`hyphal control`: run the control plane (flags as in docs/xds-conventions.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s"


def _port(text: str) -> int:
    """A port number; 0 (or `auto`) lets the kernel pick one."""
    if text.strip().lower() == "auto":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (or 'auto')") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range 0..65535")
    return value


def _plaintext_port(text: str) -> int | None:
    """The contract says 0 = off for the plaintext port; `auto` lets the kernel pick."""
    if text.strip().lower() in ("off", "0"):
        return None
    return _port(text)


def _duration(text: str) -> dt.timedelta:
    from hyphal.config.duration import DurationError, parse_duration

    try:
        value = parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if value <= dt.timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must not be negative")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "control",
        help="run the control plane (xDS, CA, config API)",
        description="Run the control plane. Port flags take a number, or 0/auto to let the "
        "kernel pick; the bound ports are written to STATE_DIR/ports.json.",
    )
    p.add_argument("--config-dir", type=Path,
                   help="directory of resources to serve (watched for changes); required "
                   "unless --config-source kubernetes")
    p.add_argument("--config-source", choices=("dir", "kubernetes"), default="dir",
                   help="kubernetes: resources, Services and endpoints from the Kubernetes API "
                   "(in-cluster config unless --kube-api)")
    p.add_argument("--registry", choices=("dir", "kubernetes"), default=None,
                   help="alias of --config-source (the registry always follows the config "
                   "source)")
    p.add_argument("--kube-api", metavar="http://HOST:PORT",
                   help="a plaintext Kubernetes API (kubectl proxy, tests) instead of the "
                   "in-cluster config")
    p.add_argument("--webhook-port", type=_port, default=None,
                   help="serve the sidecar injection webhook (HTTPS) on this port "
                   "(kubernetes mode; default off)")
    p.add_argument("--inject-image", default="ghcr.io/hyphal/hyphal:0.1.0",
                   help="image of the injected hyphal-proxy and hyphal-init containers")
    p.add_argument("--host", default="127.0.0.1",
                   help="address of the xDS mTLS, CA and API ports (0.0.0.0 in a pod)")
    p.add_argument("--state-dir", type=Path, required=True,
                   help="CA, tokens, admin token and applied resources live here")
    p.add_argument("--xds-port", type=_port, default=15012, help="ADS over mTLS (sidecars)")
    p.add_argument("--xds-plaintext-port", type=_plaintext_port, default=15010,
                   help="plaintext ADS on 127.0.0.1 for proxyless gRPC; 0 = off, auto = any")
    p.add_argument("--ca-port", type=_port, default=15013, help="CA over server-side TLS")
    p.add_argument("--api-port", type=_port, default=15014, help="HTTP API on 127.0.0.1")
    p.add_argument("--trust-domain", default="cluster.local")
    p.add_argument("--cert-ttl", type=_duration, default=dt.timedelta(hours=24),
                   help="workload certificate lifetime, e.g. 24h, 90s")
    p.add_argument("--debounce", type=_seconds, default=0.1,
                   help="seconds of quiet before a config change is pushed")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(), format=LOG_FORMAT,
                        datefmt="%H:%M:%S")
    from hyphal.control.server import ControlOptions, serve
    from hyphal.control.store import StoreLoadError
    from hyphal.kube.client import KubeError

    source = args.registry or args.config_source
    if args.registry and args.config_source != "dir" and args.registry != args.config_source:
        print("hyphal control: --registry and --config-source disagree", file=sys.stderr)
        return 2
    if source == "dir" and args.config_dir is None:
        print("hyphal control: --config-dir is required (or use --config-source kubernetes)",
              file=sys.stderr)
        return 2
    if args.config_dir is not None and not args.config_dir.is_dir():
        print(f"hyphal control: --config-dir {args.config_dir}: not a directory", file=sys.stderr)
        return 2
    if args.kube_api and not args.kube_api.startswith("http://"):
        print("hyphal control: --kube-api takes a plaintext http:// URL (kubectl proxy, "
              "tests); in a pod leave it out to use the in-cluster config", file=sys.stderr)
        return 2
    options = ControlOptions(
        config_dir=args.config_dir,
        state_dir=args.state_dir,
        xds_port=args.xds_port,
        xds_plaintext_port=args.xds_plaintext_port,
        ca_port=args.ca_port,
        api_port=args.api_port,
        trust_domain=args.trust_domain,
        cert_ttl=args.cert_ttl,
        debounce=args.debounce,
        host=args.host,
        config_source=source,
        kube_api=args.kube_api,
        webhook_port=args.webhook_port,
        inject_image=args.inject_image,
    )
    try:
        _run_loop(serve(options))
    except StoreLoadError as exc:
        print(f"hyphal control: the config in {args.config_dir} did not load, nothing was "
              "started:", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        applied = Path(args.state_dir) / "applied"
        if any(err.startswith(str(applied)) for err in exc.errors):
            # `hyphal apply` persists in the state dir, so an earlier run's changes outlive
            # `hyphal down` and meet the next config dir.
            print(f"  files under {applied}/ are resources applied with `hyphal apply` earlier; "
                  f"they are loaded over {args.config_dir}. Remove them (rm -r {applied}) to "
                  f"start from {args.config_dir} alone", file=sys.stderr)
        return 1
    except (OSError, ValueError, KubeError) as exc:
        print(f"hyphal control: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    import asyncio

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but keep running without
        asyncio.run(main)
        return
    uvloop.run(main)
