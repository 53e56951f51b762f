"""The config store: layers, all-or-nothing changes, persistence, dir reloads, listeners."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hyphal.control.store import ResourceRef, Store, StoreLoadError, StoreState

SERVICE = """\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {name: product, namespace: shop}
spec:
  selector: {app: product}
  ports: [{name: http, port: 8080, protocol: HTTP}]
"""

DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: product, namespace: shop}
spec:
  host: product
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"""


def vs(w1: int, w2: int, subset2: str = "v2") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: product, namespace: shop}}
spec:
  hosts: [product]
  http:
    - route:
        - destination: {{host: product, subset: v1}}
          weight: {w1}
        - destination: {{host: product, subset: {subset2}}}
          weight: {w2}
"""


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    config_dir = tmp_path / "config"
    state_dir = tmp_path / "state"
    config_dir.mkdir()
    (config_dir / "services.yaml").write_text(SERVICE)
    (config_dir / "rules.yaml").write_text(DR)
    return config_dir, state_dir


def new_store(dirs: tuple[Path, Path]) -> Store:
    store = Store(dirs[1], dirs[0])
    store.load()
    return store


def actions(result: object) -> list[tuple[str, str, str]]:
    return [(o.kind, o.name, o.action) for o in result.outcomes]  # type: ignore[attr-defined]


def test_load_merges_dir_and_is_generation_one(dirs: tuple[Path, Path]) -> None:
    store = new_store(dirs)
    assert store.generation == 1
    assert {r.kind for r in store.resources} == {"Service", "DestinationRule"}
    assert store.origin(("Service", "shop", "product")) == "config-dir:services.yaml"


def test_apply_creates_then_unchanged_then_configured(dirs: tuple[Path, Path]) -> None:
    store = new_store(dirs)
    first = store.apply_text(vs(80, 20))
    assert first.ok and actions(first) == [("VirtualService", "product", "created")]
    assert store.generation == 2
    again = store.apply_text(vs(80, 20))
    assert again.ok and actions(again) == [("VirtualService", "product", "unchanged")]
    assert store.generation == 2  # nothing changed, no new generation
    changed = store.apply_text(vs(20, 80))
    assert actions(changed) == [("VirtualService", "product", "configured")]
    assert store.generation == 3
    weights = [d.weight for d in store.resources.virtual_services[0].spec.http[0].route]
    assert weights == [20, 80]


def test_applied_resources_are_persisted_0600_and_survive_restart(dirs: tuple[Path, Path]) -> None:
    store = new_store(dirs)
    assert store.apply_text(vs(80, 20)).ok
    files = list((dirs[1] / "applied").iterdir())
    assert [f.name for f in files] == ["virtualservice.shop.product.yaml"]
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600

    restarted = new_store(dirs)
    assert restarted.resources.get("VirtualService", "shop", "product") is not None
    assert restarted.origin(("VirtualService", "shop", "product")).startswith("applied:")
    again = restarted.apply_text(vs(80, 20))
    assert actions(again) == [("VirtualService", "product", "unchanged")]


def test_a_change_set_with_one_bad_document_is_refused_whole(dirs: tuple[Path, Path]) -> None:
    store = new_store(dirs)
    bad = vs(80, 20).replace("name: product, namespace", "name: other, namespace") + "---\n"
    bad += vs(80, 20).replace("weight: 80", "weight: 80\n          colour: blue")
    result = store.apply_text(bad, source="change.yaml")
    assert not result.ok and result.status == 422
    assert any(e.startswith("change.yaml#2: ") and "colour" in e for e in result.errors), result
    assert store.generation == 1
    assert store.resources.get("VirtualService", "shop", "other") is None
    assert not (dirs[1] / "applied").exists() or not list((dirs[1] / "applied").iterdir())


def test_cross_resource_errors_refuse_the_change_and_name_the_field(
    dirs: tuple[Path, Path],
) -> None:
    store = new_store(dirs)
    assert store.apply_text(vs(80, 20)).ok
    before = store.resources
    result = store.apply_text(vs(50, 50, subset2="v3"), source="canary.yaml")
    assert not result.ok and result.status == 422
    assert result.errors == (
        (
            "canary.yaml#1: spec.http[0].route[1].destination.subset: subset 'v3' of "
            "product.shop.svc.cluster.local is not defined by any DestinationRule"
        ),
    )
    assert store.resources is before and store.generation == 2
    persisted = (dirs[1] / "applied" / "virtualservice.shop.product.yaml").read_text()
    assert "subset: v3" not in persisted


def test_deleting_a_config_dir_resource_is_refused_naming_its_file(
    dirs: tuple[Path, Path],
) -> None:
    store = new_store(dirs)
    result = store.delete([ResourceRef.make("dr", "product", "shop")])
    assert not result.ok and result.status == 409
    assert str(dirs[0] / "rules.yaml") in result.errors[0]
    assert "DestinationRule shop/product" in result.errors[0]
    assert store.generation == 1


def test_delete_that_breaks_a_reference_is_refused(dirs: tuple[Path, Path]) -> None:
    config_dir, state_dir = dirs
    (config_dir / "rules.yaml").unlink()
    store = new_store(dirs)
    assert store.apply_text(DR).ok
    assert store.apply_text(vs(80, 20)).ok
    result = store.delete_text(DR)
    assert not result.ok and result.status == 422
    assert "is not defined by any DestinationRule" in result.errors[0]
    assert (state_dir / "applied" / "destinationrule.shop.product.yaml").exists()


def test_delete_applied_removes_its_file_and_unknown_is_not_found(dirs: tuple[Path, Path]) -> None:
    store = new_store(dirs)
    assert store.apply_text(vs(80, 20)).ok
    missing = store.delete([ResourceRef.make("vs", "product", "shop"),
                            ResourceRef.make("vs", "nope", "shop")])
    assert not missing.ok and missing.status == 404
    assert missing.errors == ("VirtualService shop/nope not found",)
    assert store.resources.get("VirtualService", "shop", "product") is not None
    done = store.delete([ResourceRef.make("virtualservices", "product", "shop")])
    assert actions(done) == [("VirtualService", "product", "deleted")]
    assert store.resources.get("VirtualService", "shop", "product") is None
    assert not (dirs[1] / "applied" / "virtualservice.shop.product.yaml").exists()


def test_applied_override_of_a_dir_resource_wins_and_delete_restores_it(
    dirs: tuple[Path, Path],
) -> None:
    store = new_store(dirs)
    override = DR.replace("- {name: v2, labels: {version: v2}}", "- {name: v3, labels: {v: x}}")
    assert actions(store.apply_text(override)) == [("DestinationRule", "product", "configured")]
    subsets = [s.name for s in store.resources.destination_rules[0].spec.subsets]
    assert subsets == ["v1", "v3"]
    result = store.delete([ResourceRef.make("DestinationRule", "product", "shop")])
    assert result.ok and "rules.yaml" in result.outcomes[0].note
    subsets = [s.name for s in store.resources.destination_rules[0].spec.subsets]
    assert subsets == ["v1", "v2"]


def test_dir_reload_picks_up_changes_and_refuses_a_bad_dir_whole(dirs: tuple[Path, Path]) -> None:
    config_dir, _ = dirs
    store = new_store(dirs)
    seen: list[StoreState] = []
    store.subscribe(seen.append)
    assert store.poll() is None  # nothing changed since load

    (config_dir / "vs.yaml").write_text(vs(90, 10))
    result = store.poll()
    assert result is not None and actions(result) == [("VirtualService", "product", "created")]
    assert [s.generation for s in seen] == [2]

    # One good edit and one broken file in the same reload: neither is taken.
    (config_dir / "vs.yaml").write_text(vs(10, 90))
    (config_dir / "broken.yaml").write_text("kind: VirtualService\nmetadata: [\n")
    result = store.poll()
    assert result is not None and not result.ok
    assert result.errors[0].startswith("broken.yaml#1: ")
    assert store.dir_errors == result.errors
    weights = [d.weight for d in store.resources.virtual_services[0].spec.http[0].route]
    assert weights == [90, 10] and store.generation == 2 and len(seen) == 1

    (config_dir / "broken.yaml").unlink()
    result = store.poll()
    assert result is not None and actions(result) == [("VirtualService", "product", "configured")]
    assert store.dir_errors == () and [s.generation for s in seen] == [2, 3]
    assert seen[-1].resources is store.resources


async def test_watch_task_reloads_within_a_second(dirs: tuple[Path, Path]) -> None:
    import asyncio

    config_dir, _ = dirs
    store = new_store(dirs)
    changed = asyncio.Event()
    store.subscribe(lambda state: changed.set())
    task = asyncio.create_task(store.watch(0.05))
    try:
        (config_dir / "vs.yaml").write_text(vs(90, 10))
        await asyncio.wait_for(changed.wait(), 1.0)
        assert store.resources.get("VirtualService", "shop", "product") is not None
    finally:
        task.cancel()


def test_start_with_a_bad_config_dir_fails_with_precise_errors(dirs: tuple[Path, Path]) -> None:
    config_dir, state_dir = dirs
    (config_dir / "vs.yaml").write_text(vs(80, 20, subset2="v9"))
    with pytest.raises(StoreLoadError) as info:
        Store(state_dir, config_dir).load()
    assert info.value.errors == (
        (
            "vs.yaml#1: spec.http[0].route[1].destination.subset: subset 'v9' of "
            "product.shop.svc.cluster.local is not defined by any DestinationRule"
        ),
    )


def test_query_filters_and_accepts_kind_aliases(dirs: tuple[Path, Path]) -> None:
    store = new_store(dirs)
    assert store.apply_text(vs(80, 20)).ok
    items = store.query(kind="vs")
    assert [i["resource"]["metadata"]["name"] for i in items] == ["product"]
    assert items[0]["source"].startswith("applied:")
    assert items[0]["resource"]["kind"] == "VirtualService"
    assert store.query(kind="svc", namespace="other") == []
    assert len(store.query()) == 3
    with pytest.raises(ValueError, match="unknown resource kind 'bogus'"):
        store.query(kind="bogus")


def test_a_resource_named_twice_in_one_delete_is_deleted_once(dirs: tuple[Path, Path]) -> None:
    store = new_store(dirs)
    override = DR.replace("- {name: v2, labels: {version: v2}}", "- {name: v3, labels: {v: x}}")
    assert store.apply_text(override).ok
    ref = ResourceRef.make("dr", "product", "shop")
    result = store.delete([ref, ref])
    assert result.ok and actions(result) == [("DestinationRule", "product", "deleted")]


def test_hidden_paths_and_a_nested_state_dir_are_not_config(tmp_path: Path) -> None:
    (tmp_path / "services.yaml").write_text(SERVICE)
    (tmp_path / ".hyphal").mkdir()
    (tmp_path / ".hyphal" / "mesh.json").write_text('{"api": "http://127.0.0.1:1"}')
    (tmp_path / ".vs.yaml.swp.yaml").write_text("not: [valid")
    state_dir = tmp_path / "state"
    store = Store(state_dir, tmp_path)
    store.load()
    assert store.apply_text(DR).ok  # written to state/applied/, inside the config dir
    assert store.poll() is None
    restarted = Store(state_dir, tmp_path)
    restarted.load()
    assert restarted.origin(("DestinationRule", "shop", "product")).startswith("applied:")


def test_a_resource_defined_in_two_files_is_an_error_naming_both(
    dirs: tuple[Path, Path],
) -> None:
    config_dir, state_dir = dirs
    (config_dir / "again.yaml").write_text(SERVICE)
    with pytest.raises(StoreLoadError) as info:
        Store(state_dir, config_dir).load()
    assert info.value.errors == (
        (
            "services.yaml#1: metadata.name: duplicate Service shop/product: also defined at "
            "again.yaml#1"
        ),
    )
