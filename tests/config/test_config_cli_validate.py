"""`hyphal validate`: output and exit codes, run as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from config_helpers import BASE, write


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hyphal", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ok(tmp_path: Path) -> None:
    done = run(write(tmp_path, BASE))
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok: 6 resources\n", "")


def test_errors_each_on_a_line_exit_1(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            **BASE,
            "shop/vs.yaml": "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            "metadata: {name: p, namespace: shop}\nspec:\n  hosts: [product]\n  http:\n"
            "  - route: [{destination: {host: product, subset: v9}}]\n",
            "shop/dr.yaml": "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            "metadata: {name: c, namespace: shop}\nspec: {host: cart, trafficPolicy: {}}\n",
        },
    )
    done = run(tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        (
            "shop/vs.yaml#1: spec.http[0].route[0].destination.subset: subset 'v9' of "
            "product.shop.svc.cluster.local is not defined by any DestinationRule"
        ),
    ]


def test_load_errors_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [\n")
    done = run(bad, tmp_path / "missing")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        (
            f"{bad}#1: invalid YAML at line 2, column 1: while parsing a flow node, "
            "did not find expected node content"
        ),
        f"{tmp_path / 'missing'}: no such file or directory",
    ]


def test_usage_error_without_paths() -> None:
    done = run()
    assert done.returncode == 2
