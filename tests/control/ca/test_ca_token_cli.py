"""`hyphal token create` prints a token the CA accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hyphal.cli import main
from hyphal.control.ca.tokens import TokenIssuer
from hyphal.identity.spiffe import SpiffeId


def test_token_create_prints_a_verifiable_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    rc = main(
        ["token", "create", "--state-dir", str(state), "--namespace", "shop",
         "--service-account", "product", "--ttl", "2h"]
    )  # fmt: skip
    assert rc == 0
    token = capsys.readouterr().out.strip()
    issuer = TokenIssuer.load_or_create(state)
    assert issuer.verify(token) == SpiffeId("cluster.local", "shop", "product")
    claims = issuer.claims(token)
    assert claims["exp"] - claims["iat"] == 7200


def test_token_create_with_trust_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    args = ["token", "create", "--state-dir", str(state), "-n", "a", "--sa", "b"]
    assert main([*args, "--trust-domain", "example.org"]) == 0
    token = capsys.readouterr().out.strip()
    assert TokenIssuer.load_or_create(state, "example.org").verify(token).trust_domain == (
        "example.org"
    )


def test_token_create_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["token", "create", "--state-dir", str(tmp_path), "-n", "bad ns", "--sa", "x"])
    assert rc == 1
    assert "invalid namespace" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            ["token", "create", "--state-dir", str(tmp_path), "-n", "a", "--sa", "b", "--ttl", "x"]
        )


def test_token_create_as_a_process(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hyphal", "token", "create", "--state-dir", str(tmp_path),
         "--namespace", "shop", "--service-account", "product"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    token = out.stdout.strip()
    assert TokenIssuer.load_or_create(tmp_path).verify(token).service_account == "product"
