"""The injection webhook: golden JSONPatch for a Deployment's pod, opt-outs, the sidecar's
bootstrap rendering."""

from __future__ import annotations

import base64
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from hyphal.kube.inject import InjectConfig, iptables_rules, review_response
from hyphal.kube.sidecar import render
from hyphal.proxy.bootstrap import parse_bootstrap

GOLDEN = Path(__file__).with_name("golden") / "deployment-pod.patch.json"
CFG = InjectConfig(image="hyphal:test", root_cert_pem="-----BEGIN CERTIFICATE-----\nx\n")


def deployment_pod() -> dict[str, Any]:
    """A pod as the ReplicaSet controller submits it for `kubectl create deployment`."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "product-v1-7d4b9c-", "namespace": "shop",
                     "labels": {"app": "product", "version": "v1",
                                "pod-template-hash": "7d4b9c"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "product-v1-7d4b9c"}]},
        "spec": {"serviceAccountName": "product",
                 "containers": [{"name": "product", "image": "shop/product:1",
                                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    }


def review(pod: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                        "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": "shop", "operation": operation, "object": pod}}


def patch_of(answer: dict[str, Any]) -> list[dict[str, Any]] | None:
    response = answer["response"]
    assert response["allowed"] is True
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    if "patch" not in response:
        return None
    assert response["patchType"] == "JSONPatch"
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"]))
    return patch


def test_deployment_pod_golden_patch() -> None:
    patch = patch_of(review_response(review(deployment_pod()), CFG))
    if os.environ.get("HYPHAL_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(patch, indent=2, sort_keys=True) + "\n")
    assert patch == json.loads(GOLDEN.read_text())


def apply_patch(doc: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """Just enough RFC 6902 `add` to check the patch applies to the pod it was made for."""
    out = copy.deepcopy(doc)
    for op in patch:
        assert op["op"] == "add"
        *parents, last = [p.replace("~1", "/").replace("~0", "~")
                          for p in op["path"].split("/")[1:]]
        target: Any = out
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), op["value"])
        else:
            target[last] = op["value"]
    return out


def test_patched_pod_has_sidecar_init_token_and_a_valid_bootstrap() -> None:
    pod = deployment_pod()
    pod["metadata"]["annotations"] = {"team": "shop"}
    pod["spec"]["initContainers"] = [{"name": "migrate", "image": "shop/migrate"}]
    patch = patch_of(review_response(review(pod), CFG))
    assert patch is not None
    out = apply_patch(pod, patch)
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["hyphal-init", "migrate"]
    assert [c["name"] for c in out["spec"]["containers"]] == ["product", "hyphal-proxy"]
    [token] = [v for v in out["spec"]["volumes"] if v["name"] == "hyphal-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "hyphal-ca"
    assert out["metadata"]["annotations"]["team"] == "shop"
    rendered = render(out["metadata"]["annotations"]["sidecar.hyphal.dev/bootstrap"],
                      {"POD_NAME": "product-v1-7d4b9c-x2x", "POD_NAMESPACE": "shop",
                       "POD_IP": "10.0.0.5"})
    boot = parse_bootstrap(json.loads(rendered), "bootstrap.json")
    assert boot.node.id == "product-v1-7d4b9c-x2x.shop"
    assert boot.node.service_account == "product"
    assert boot.node.workload_name == "product"


def test_iptables_scheme() -> None:
    rules = iptables_rules()
    assert "-A HYPHAL_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules
    assert "-A HYPHAL_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in rules
    # The proxy's own traffic must not loop back into it.
    owner = rules.index("-A HYPHAL_OUTPUT -m owner --uid-owner 1337 -j RETURN")
    assert owner < rules.index("-A HYPHAL_OUTPUT -j HYPHAL_REDIRECT")


@pytest.mark.parametrize("change", ["annotation", "injected", "host_network", "update"])
def test_opt_outs_are_allowed_unpatched(change: str) -> None:
    pod = deployment_pod()
    operation = "CREATE"
    if change == "annotation":
        pod["metadata"]["annotations"] = {"sidecar.hyphal.dev/inject": "false"}
    elif change == "injected":
        pod["spec"]["containers"].append({"name": "hyphal-proxy", "image": "hyphal"})
    elif change == "host_network":
        pod["spec"]["hostNetwork"] = True
    else:
        operation = "UPDATE"
    assert patch_of(review_response(review(pod, operation), CFG)) is None


def test_render_names_missing_env() -> None:
    with pytest.raises(ValueError, match="POD_IP"):
        render('{"ip": "${POD_IP}"}', {"POD_NAME": "x"})
