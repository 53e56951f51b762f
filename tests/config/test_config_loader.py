"""Loading: files, directories, multi-document YAML, JSON, List, apiVersions, sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from config_helpers import BASE, write
from pydantic import ValidationError

from hyphal.config import (
    ConfigError,
    ConfigErrors,
    DestinationRule,
    Service,
    Source,
    VirtualService,
    load_paths,
    load_text,
)

VS_TEMPLATE = """\
apiVersion: {api}
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [product]
  http:
  - match:
    - uri: {{prefix: /api}}
      headers: {{x-canary: {{exact: "yes"}}}}
      queryParams: {{debug: {{regex: "1|true"}}}}
      ignoreUriCase: true
    route:
    - destination: {{host: product, subset: v2}}
    timeout: 1.5s
    retries: {{attempts: 3, perTryTimeout: 100ms, retryOn: "5xx,reset,503"}}
  - route:
    - destination: {{host: product, subset: v1}}
      weight: 90
    - destination: {{host: product, subset: v2}}
      weight: 10
    fault:
      delay: {{fixedDelay: 2m, percentage: {{value: 0.5}}}}
"""


@pytest.mark.parametrize(
    "api",
    ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"],
)
def test_all_networking_api_versions(api: str) -> None:
    [vs] = load_text(VS_TEMPLATE.format(api=api, name="product"), "vs.yaml")
    assert isinstance(vs, VirtualService)
    assert vs.api_version == api
    first, second = vs.spec.http
    assert first.match[0].uri is not None and first.match[0].uri.kind == "prefix"
    assert first.match[0].headers["x-canary"].value == "yes"
    assert first.timeout is not None and first.timeout.total_seconds() == 1.5
    assert first.retries is not None and first.retries.retry_on_list == ("5xx", "reset", "503")
    assert first.retries.per_try_timeout is not None
    assert first.retries.per_try_timeout.total_seconds() == 0.1
    assert [r.weight for r in second.route] == [90, 10]
    assert second.fault is not None and second.fault.delay is not None
    assert second.fault.delay.fixed_delay.total_seconds() == 120
    assert second.fault.delay.fraction_percent == 0.5


@pytest.mark.parametrize("api", ["security.istio.io/v1", "security.istio.io/v1beta1"])
def test_security_api_versions(api: str) -> None:
    text = f"""\
apiVersion: {api}
kind: AuthorizationPolicy
metadata: {{name: allow-cart, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: product}}}}
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/shop/sa/cart]}}}}]
    to: [{{operation: {{methods: [GET], paths: [/api/*], ports: ["8080"]}}}}]
    when: [{{key: "request.headers[X-User]", values: [alice]}}]
---
apiVersion: {api}
kind: PeerAuthentication
metadata: {{name: default, namespace: shop}}
spec:
  mtls: {{mode: STRICT}}
"""
    ap, pa = load_text(text, "sec.yaml")
    assert ap.kind == "AuthorizationPolicy" and pa.kind == "PeerAuthentication"
    rule = ap.spec.rules[0]
    assert rule.from_[0].source.principals == ("cluster.local/ns/shop/sa/cart",)
    assert rule.to[0].operation.ports == (8080,)
    assert rule.when[0].header_name == "x-user"
    assert pa.spec.mtls.mode == "STRICT"  # type: ignore[union-attr]


def test_empty_authorization_policy_is_deny_all_shape() -> None:
    [ap] = load_text(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: deny-all, namespace: shop}\nspec: {}\n",
        "ap.yaml",
    )
    assert ap.spec.action == "ALLOW" and ap.spec.rules == ()  # type: ignore[union-attr]


def test_multi_document_with_empty_documents_and_sources(tmp_path: Path) -> None:
    text = "# leading comment\n---\n" + BASE["shop/product-dr.yaml"] + "---\n---\n"
    text += BASE["shop/services.yaml"]
    (tmp_path / "all.yaml").write_text(text)
    rs = load_paths([tmp_path / "all.yaml"])
    assert [r.kind for r in rs] == ["DestinationRule", "Service", "Service"]
    sources = [r.source for r in rs]
    file = str(tmp_path / "all.yaml")
    assert sources == [
        Source(file=file, document=1),
        Source(file=file, document=3),
        Source(file=file, document=4),
    ]


def test_directory_recursive_sorted_relative_sources(tmp_path: Path) -> None:
    write(tmp_path, BASE)
    (tmp_path / "notes.txt").write_text("not: [config")
    (tmp_path / "shop" / "extra.json").write_text(
        json.dumps(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "cart", "namespace": "shop"},
                "spec": {
                    "host": "cart",
                    "trafficPolicy": {"loadBalancer": {"simple": "PEAK_EWMA"}},
                },
            }
        )
    )
    rs = load_paths(tmp_path)
    files = [r.source.file for r in rs if r.source]
    assert files == sorted(files)
    assert set(files) == {
        "external.yaml",
        "shop/extra.json",
        "shop/product-dr.yaml",
        "shop/services.yaml",
        "shop/workloads.yaml",
    }
    dr = rs.get("DestinationRule", "shop", "cart")
    assert isinstance(dr, DestinationRule)
    tp = dr.spec.traffic_policy
    assert tp is not None and tp.load_balancer is not None
    assert tp.load_balancer.simple == "PEAK_EWMA"


def test_kind_list(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "hyphal.dev/v1alpha1",
                "kind": "Service",
                "metadata": {"name": f"s{i}"},
                "spec": {"ports": [{"port": 80}], "selector": {"app": f"s{i}"}},
            }
            for i in range(3)
        ],
    }
    [a, _b, c] = load_text(json.dumps(doc), "list.json")
    assert isinstance(a, Service) and (a.name, c.name, a.namespace) == ("s0", "s2", "default")


def test_errors_are_all_collected_not_only_the_first(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "a.yaml": "apiVersion: hyphal.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\n"
            "spec: {ports: [{port: 0}], selector: {app: a}, extra: 1}\n",
            "b.yaml": "apiVersion: hyphal.dev/v1alpha1\nkind: Workload\nmetadata: {name: b}\n"
            "spec: {replicas: -1, restartPolicy: Sometimes}\n",
        },
    )
    with pytest.raises(ConfigErrors) as info:
        load_paths([tmp_path])
    assert [str(e) for e in info.value.errors] == [
        "a.yaml#1: spec.ports[0].port: must be 1..65535",
        "a.yaml#1: spec.extra: not supported by hyphal",
        "b.yaml#1: spec.replicas: must be 0..1000",
        "b.yaml#1: spec.restartPolicy: must be one of Always, OnFailure, Never (got 'Sometimes')",
    ]
    assert info.value.errors[0] == ConfigError(
        "a.yaml", 1, "spec.ports[0].port", "must be 1..65535"
    )


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_paths([tmp_path / "nope"])
    assert str(info.value) == f"{tmp_path / 'nope'}: no such file or directory"


def test_workload_local_mode_fields() -> None:
    [w] = load_text(
        """\
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {name: product-v1, namespace: shop}
spec:
  labels: {app: product, version: v1}
  ports: [{name: http, port: 8080}]
  replicas: 2
  command: "python -m product --port 8080"
  args: [--verbose]
  env: [{name: LOG_LEVEL, value: debug}, {name: WORKERS, value: 4}]
  restartPolicy: OnFailure
  workingDir: /srv
""",
        "w.yaml",
    )
    spec = w.spec
    assert spec.argv == ("python", "-m", "product", "--port", "8080", "--verbose")  # type: ignore[union-attr]
    assert spec.env == {"LOG_LEVEL": "debug", "WORKERS": "4"}  # type: ignore[union-attr]
    assert spec.service_account == "default" and spec.replicas == 2  # type: ignore[union-attr]
    assert spec.restart_policy == "OnFailure"  # type: ignore[union-attr]


def test_models_are_frozen() -> None:
    [svc] = load_text(BASE["shop/services.yaml"], "s.yaml")[:1]
    with pytest.raises(ValidationError, match="frozen"):
        svc.metadata = svc.metadata
