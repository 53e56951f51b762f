"""`hyphal install`: the manifests parse, match deploy/kubernetes/, and grant least privilege."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from hyphal.cli import main
from hyphal.config import KINDS
from hyphal.kube.config_source import CRD_TYPES

DEPLOYED = Path(__file__).parents[2] / "deploy" / "kubernetes" / "hyphal.yaml"


def install(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["install", "--dry-run", *args]) == 0
    return capsys.readouterr().out


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_dry_run_matches_deploy_kubernetes(capsys: pytest.CaptureFixture[str]) -> None:
    text = install(capsys, "-o", "yaml")
    if os.environ.get("HYPHAL_UPDATE_GOLDEN"):
        DEPLOYED.write_text(text)
    assert text == DEPLOYED.read_text(), (
        "deploy/kubernetes/hyphal.yaml is stale: run HYPHAL_UPDATE_GOLDEN=1 pytest "
        "tests/kube/test_install.py")
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs][:1] == ["Namespace"]
    assert docs[0]["metadata"]["name"] == "hyphal-system"


def test_crds_cover_the_supported_custom_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    docs = list(yaml.safe_load_all(install(capsys)))
    crds = {d["spec"]["names"]["kind"]: d for d in by_kind(docs, "CustomResourceDefinition")}
    assert set(crds) == {t.kind for t in CRD_TYPES} == set(KINDS) - {"Service", "Workload"}
    for kind, crd in crds.items():
        versions = crd["spec"]["versions"]
        assert sum(v["storage"] for v in versions) == 1
        for v in versions:  # every served version is one hyphal's model accepts
            assert f"{crd['spec']['group']}/{v['name']}" in KINDS[kind].API_VERSIONS


def test_least_privilege_and_control_plane(capsys: pytest.CaptureFixture[str]) -> None:
    docs = list(yaml.safe_load_all(install(capsys)))
    [role] = by_kind(docs, "ClusterRole")
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs == {"list", "watch", "create"}
    creates = [r for r in role["rules"] if "create" in r["verbs"]]
    assert sorted(r["resources"][0] for r in creates) == ["events", "tokenreviews"]
    assert not any("*" in r["resources"] or "secrets" in r["resources"] for r in role["rules"])
    [deploy] = by_kind(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "--config-source" in container["args"]
    [pdb] = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    [hook] = by_kind(docs, "MutatingWebhookConfiguration")[0]["webhooks"]
    assert hook["namespaceSelector"] == {"matchLabels": {"hyphal-injection": "enabled"}}
    assert hook["clientConfig"]["service"]["path"] == "/inject"
    assert not by_kind(docs, "Secret")


def test_ca_dir_adds_secret_and_ca_bundle(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(install(capsys, "--ca-dir", str(tmp_path / "ca-state"))))
    root = (tmp_path / "ca-state" / "ca" / "root-cert.pem").read_bytes()
    [hook] = by_kind(docs, "MutatingWebhookConfiguration")[0]["webhooks"]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == root
    [secret] = by_kind(docs, "Secret")
    assert base64.b64decode(secret["data"]["root-cert.pem"]) == root
    json_out = install(capsys, "-o", "json")
    assert '"kind": "List"' in json_out
