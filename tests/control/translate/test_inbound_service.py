"""The inbound cluster names the Service its port serves, so the destination side reports
`destination_service` as the Service FQDN (Istio's label), not `inbound|<port>||`."""

from __future__ import annotations

from translate_helpers import SHOP, load, run, sidecar

from hyphal.control.translate import naming
from hyphal.proxy.compile.clusters import compile_cluster

P1 = sidecar("product-v1", "shop", {"app": "product", "version": "v1"}, "product",
             base=21000, ports=[{"name": "web", "port": 9080, "protocol": "HTTP",
                                 "app_port": 21001, "inbound_port": 21002}])
LONE = sidecar("lone", "shop", {"app": "nobody-selects-me"}, "lone", base=22000)


def _service(node_out: dict[str, dict[str, object]], cluster: str) -> str:
    return compile_cluster(node_out[naming.CLUSTER_TYPE][cluster]).spec.service


def test_inbound_cluster_carries_the_service_fqdn_matched_by_target_port_name() -> None:
    # product's Service port 8080 has targetPort: web -> workload port 9080 named web.
    out = run(load(SHOP), P1, P1)
    assert _service(out, "inbound|9080||") == "product.shop.svc.cluster.local"


def test_inbound_cluster_matched_by_port_number() -> None:
    front = sidecar("frontend", "shop", {"app": "frontend"}, "frontend", base=23000)
    out = run(load(SHOP), front, front)
    assert _service(out, "inbound|8080||") == "frontend.shop.svc.cluster.local"


def test_inbound_cluster_with_no_selecting_service_has_no_service() -> None:
    out = run(load(SHOP), LONE, LONE)
    c = out[naming.CLUSTER_TYPE]["inbound|8080||"]
    assert naming.HYPHAL_METADATA not in c.metadata.filter_metadata
    assert _service(out, "inbound|8080||") == ""
