"""The sidecar process does not import pydantic (its bootstrap check is hand-written: ~10 MB RSS)
nor cryptography (certificates are made in a child process)."""

from __future__ import annotations

import subprocess
import sys


def test_sidecar_server_does_not_import_pydantic() -> None:
    code = (
        "import sys, hyphal.cli.proxy, hyphal.proxy.server; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'pydantic', 'pydantic_core'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert out == "[]", f"the sidecar imports {out}"


def test_sidecar_server_does_not_import_cryptography() -> None:
    """Keys, CSRs and the CA's answer are handled in hyphal.proxy.cert_worker's child process;
    JWT filters load it only when a listener has one (~10 MB RSS)."""
    code = (
        "import sys, hyphal.cli.proxy, hyphal.proxy.server, hyphal.proxy.compile.listeners; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert out == "[]", f"the sidecar imports {out}"
