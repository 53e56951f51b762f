"""Directory loading ignores hidden paths."""

from pathlib import Path

from hyphal.config import load_paths


def test_directory_loading_skips_hidden_paths(tmp_path: Path) -> None:
    # A run directory (.hyphal/) left inside the mesh folder holds JSON that is not config.
    (tmp_path / ".hyphal" / "bootstrap").mkdir(parents=True)
    (tmp_path / ".hyphal" / "bootstrap" / "a.json").write_text('{"node": {}}')
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "svc.yaml").write_text(
        "apiVersion: hyphal.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\n"
        "spec: {selector: {app: a}, ports: [{name: http, port: 80}]}\n"
    )
    rs = load_paths(tmp_path)
    assert len(rs) == 1
