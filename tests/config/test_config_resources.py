"""ResourceSet operations and the to_yaml round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from config_helpers import BASE, write
from test_config_loader import VS_TEMPLATE

from hyphal.config import ResourceSet, Service, load_paths, load_text, to_yaml


@pytest.fixture
def rs(tmp_path: Path) -> ResourceSet:
    return load_paths([write(tmp_path, BASE)])


def test_lookup_and_views(rs: ResourceSet) -> None:
    assert len(rs) == 6
    svc = rs.get("Service", "shop", "product")
    assert isinstance(svc, Service) and svc.spec.ports[0].target == "web"
    assert rs.get("Service", "default", "product") is None
    assert [s.name for s in rs.services] == ["product", "cart"]
    assert [w.name for w in rs.workloads] == ["product-v1", "cart"]
    assert [d.name for d in rs.destination_rules] == ["product"]
    assert [e.spec.hosts for e in rs.service_entries] == [("httpbin.org",)]
    assert rs.virtual_services == () and rs.authorization_policies == ()
    assert rs.peer_authentications == ()
    assert rs.of_kind("Workload") == rs.workloads
    assert rs.of_kind(Service) == rs.services
    assert ("Service", "shop", "cart") in rs


def test_merge_other_wins_and_without(rs: ResourceSet) -> None:
    changed = load_text(BASE["shop/product-dr.yaml"].replace("v2", "v3"), "new.yaml")
    merged = rs.merge(changed)
    assert len(merged) == len(rs)
    dr = merged.get("DestinationRule", "shop", "product")
    assert dr is not None and [s.name for s in dr.spec.subsets] == ["v1", "v3"]  # type: ignore[union-attr]
    assert dr.source is not None and dr.source.file == "new.yaml"
    # the original is untouched
    old = rs.get("DestinationRule", "shop", "product")
    assert [s.name for s in old.spec.subsets] == ["v1", "v2"]  # type: ignore[union-attr]
    smaller = merged.without([("DestinationRule", "shop", "product"), ("Nope", "x", "y")])
    assert len(smaller) == 5 and ("DestinationRule", "shop", "product") not in smaller
    assert rs.merge(ResourceSet()) == rs


def test_to_yaml_round_trip_keeps_only_what_was_written() -> None:
    text = VS_TEMPLATE.format(api="networking.istio.io/v1beta1", name="product")
    [vs] = load_text(text, "vs.yaml")
    dumped = to_yaml(vs)
    assert yaml.safe_load(dumped) == yaml.safe_load(text)
    [again] = load_text(dumped, "again.yaml")
    assert again.model_dump() == vs.model_dump()
    assert vs.to_yaml() == dumped


def test_to_yaml_of_every_kind_round_trips(rs: ResourceSet) -> None:
    for r in rs:
        [again] = load_text(to_yaml(r), "x.yaml")
        assert again.model_dump() == r.model_dump()
    assert len(load_text(rs.to_yaml(), "all.yaml")) == len(rs)


def test_to_yaml_of_a_model_built_in_code_names_its_kind() -> None:
    svc = Service.model_validate(
        {
            "apiVersion": "hyphal.dev/v1alpha1",
            "kind": "Service",
            "metadata": {"name": "x"},
            "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}},
        }
    )
    data = yaml.safe_load(to_yaml(svc))
    assert data["apiVersion"] == "hyphal.dev/v1alpha1" and data["kind"] == "Service"
    assert data["metadata"] == {"name": "x"}
