"""Tests for hyphal.proxy.bootstrap: the contract's example loads; errors name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hyphal.proxy.bootstrap import BootstrapError, load_bootstrap


def example() -> dict[str, Any]:
    return {
        "node": {
            "id": "product-v1-0.shop",
            "cluster": "product-v1",
            "metadata": {
                "NAMESPACE": "shop",
                "SERVICE_ACCOUNT": "product",
                "WORKLOAD_NAME": "product-v1",
                "LABELS": {"app": "product", "version": "v1"},
                "INSTANCE_IP": "127.0.0.1",
                "PROXY_MODE": "sidecar",
                "OUTBOUND_HTTP_PORT": 21001,
                "PORTS": [
                    {
                        "name": "http",
                        "port": 8080,
                        "protocol": "HTTP",
                        "app_port": 21002,
                        "inbound_port": 21003,
                    }
                ],
                "UPSTREAM_PORTS": {},
            },
        },
        "xds_address": "127.0.0.1:15012",
        "ca_address": "127.0.0.1:15013",
        "root_cert_file": "ca/root-cert.pem",
        "token_file": "/path/tokens/product-v1.token",
        "trust_domain": "cluster.local",
        "admin_port": 21004,
        "access_log": "-",
        "cert_ttl_seconds": 86400,
    }


def write(tmp_path: Path, data: Any) -> Path:
    p = tmp_path / "bootstrap.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_contract_example_loads(tmp_path: Path) -> None:
    b = load_bootstrap(write(tmp_path, example()))
    assert b.node.id == "product-v1-0.shop"
    assert b.node.namespace == "shop"
    assert b.spiffe_id == "spiffe://cluster.local/ns/shop/sa/product"
    assert b.node.ports[0].inbound_port == 21003
    assert b.node.outbound_http_port == 21001
    assert b.root_cert_file == tmp_path.resolve() / "ca/root-cert.pem"
    assert b.token_file == Path("/path/tokens/product-v1.token")
    assert b.node.metadata()["LABELS"] == {"app": "product", "version": "v1"}
    assert b.admin_port == 21004


def test_missing_namespace_names_the_field(tmp_path: Path) -> None:
    d = example()
    del d["node"]["metadata"]["NAMESPACE"]
    with pytest.raises(BootstrapError, match=r"node\.metadata\.NAMESPACE: Field required"):
        load_bootstrap(write(tmp_path, d))


def test_unknown_top_level_field_is_refused(tmp_path: Path) -> None:
    d = example()
    d["xds_adress"] = "x"
    with pytest.raises(BootstrapError, match=r"xds_adress: not supported"):
        load_bootstrap(write(tmp_path, d))


def test_bad_address_and_port(tmp_path: Path) -> None:
    d = example()
    d["xds_address"] = "localhost"
    d["node"]["metadata"]["PORTS"][0]["app_port"] = 70000
    with pytest.raises(BootstrapError) as ei:
        load_bootstrap(write(tmp_path, d))
    msg = str(ei.value)
    assert "xds_address" in msg and "HOST:PORT" in msg
    assert "node.metadata.PORTS.0.app_port" in msg


def test_not_json(tmp_path: Path) -> None:
    with pytest.raises(BootstrapError, match="not valid JSON"):
        load_bootstrap(write(tmp_path, "{nope"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BootstrapError, match="cannot be read"):
        load_bootstrap(tmp_path / "absent.json")


def test_token_and_root_read(tmp_path: Path) -> None:
    d = example()
    d["token_file"] = "tok"
    b = load_bootstrap(write(tmp_path, d))
    with pytest.raises(BootstrapError, match="token_file"):
        b.read_token()
    (tmp_path / "tok").write_text("abc\n")
    assert b.read_token() == "abc"
    with pytest.raises(BootstrapError, match="root_cert_file"):
        b.read_root_pem()
