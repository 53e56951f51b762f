"""Private files: 0600, atomic, and `exclusive` never replaces what is there."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hyphal.identity.files import write_private


@pytest.mark.parametrize("durable", [True, False])
def test_writes_owner_only_and_leaves_no_temporary(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "key.pem"
    write_private(path, b"first", durable=durable)
    write_private(path, b"second", durable=durable)
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_exclusive_refuses_an_existing_file_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "root-cert.pem"
    write_private(path, b"original", exclusive=True)
    with pytest.raises(FileExistsError):
        write_private(path, b"intruder", exclusive=True)
    assert path.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["root-cert.pem"]
