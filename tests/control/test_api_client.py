"""How the CLI finds the control plane's API and token, and reads kind names and tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyphal.cli.client import ClientError, locate
from hyphal.cli.resources import format_table
from hyphal.control.store import kinds


def test_api_flag_wins_over_env_and_mesh_file(tmp_path: Path) -> None:
    (tmp_path / ".hyphal").mkdir()
    (tmp_path / ".hyphal" / "mesh.json").write_text(
        json.dumps({"api": "http://127.0.0.1:3", "state_dir": str(tmp_path / "st")}))
    env = {"HYPHAL_API": "http://127.0.0.1:2/", "HYPHAL_ADMIN_TOKEN": "tok"}
    t = locate(api="http://127.0.0.1:1", env=env, cwd=tmp_path)
    assert (t.url, t.token, t.source) == ("http://127.0.0.1:1", "tok", "--api")
    t = locate(env=env, cwd=tmp_path)
    assert (t.url, t.source) == ("http://127.0.0.1:2", "HYPHAL_API")


def test_mesh_file_gives_url_and_its_state_dir_gives_the_token(tmp_path: Path) -> None:
    state = tmp_path / "st"
    state.mkdir()
    (state / "admin-token").write_text("secret\n")
    (tmp_path / ".hyphal").mkdir()
    (tmp_path / ".hyphal" / "mesh.json").write_text(
        json.dumps({"api": "http://127.0.0.1:3", "state_dir": str(state)}))
    t = locate(env={}, cwd=tmp_path)
    assert (t.url, t.token) == ("http://127.0.0.1:3", "secret")
    assert t.source.endswith(".hyphal/mesh.json")
    other = tmp_path / "other"
    other.mkdir()
    (other / "admin-token").write_text("from-env")
    t = locate(env={"HYPHAL_STATE_DIR": str(other)}, cwd=tmp_path)
    assert t.token == "secret"  # mesh.json's state dir is only a fallback...
    t = locate(state_dir=str(other), env={}, cwd=tmp_path)
    assert t.token == "from-env"  # ...and --state-dir picks another


def test_nothing_found_says_how_to_point_at_a_control_plane(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="pass --api URL, set HYPHAL_API, or run this in"):
        locate(env={}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("typed", "kind"),
    [("vs", "VirtualService"), ("VirtualServices", "VirtualService"), ("dr", "DestinationRule"),
     ("se", "ServiceEntry"), ("ap", "AuthorizationPolicy"), ("pa", "PeerAuthentication"),
     ("svc", "Service"), ("workload", "Workload"), ("workloads", "Workload"),
     ("virtualservice.networking.istio.io", "VirtualService")],
)
def test_kind_aliases(typed: str, kind: str) -> None:
    assert kinds.resolve(typed) == kind


def test_tables_show_useful_columns_per_kind() -> None:
    items = [{"source": "config-dir:x.yaml", "resource": {
        "kind": "DestinationRule", "metadata": {"name": "product", "namespace": "shop"},
        "spec": {"host": "product", "subsets": [{"name": "v1"}, {"name": "v2"}]}}}]
    assert format_table("DestinationRule", items).splitlines() == [
        "NAMESPACE   NAME      HOST      SUBSETS   SOURCE",
        "shop        product   product   v1,v2     config-dir",
    ]
