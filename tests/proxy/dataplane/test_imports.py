"""What a data plane process does not import (RSS: each of these costs megabytes).

`cryptography` (~7-9 MB with what it pulls in): the data plane reads its own SPIFFE id with
`ssl`; key material reaches `ssl` through memory files, not `tempfile`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .mesh import Ca, spiffe


def modules_after(code: str) -> set[str]:
    """Modules imported by a fresh interpreter once it has run `code`."""
    code += "\nimport sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return set(out.split())


def test_mtls_material_does_not_import_cryptography(tmp_path: Path) -> None:
    ca = Ca.make()
    chain, key = ca.leaf(spiffe("shop", "product"))
    for name, data in (("chain", chain), ("key", key), ("ca", ca.pem)):
        (tmp_path / f"{name}.pem").write_bytes(data)
    code = (
        "from pathlib import Path\n"
        "import hyphal.proxy.dataplane\n"
        "from hyphal.proxy.transport.tls import TlsMaterial\n"
        f"d = Path({str(tmp_path)!r})\n"
        "pems = [(d / f'{n}.pem').read_bytes() for n in ('chain', 'key', 'ca')]\n"
        "m = TlsMaterial(*pems)\n"
        f"assert m.identity == {spiffe('shop', 'product')!r}, m.identity\n"
        "m.update(*pems)\n"
    )
    tops = {name.split(".")[0] for name in modules_after(code)}
    assert "cryptography" not in tops, "the data plane imports cryptography"
    assert "tempfile" not in tops, "TLS material goes through memfd files, not tempfile"
