"""Stats rendering (Prometheus text, Istio names) and the buffered JSON access log."""

from __future__ import annotations

import json

from hyphal.telemetry.accesslog import AccessLog
from hyphal.telemetry.stats import PeerLabels, Stats


def test_requests_and_histogram_render():
    stats = Stats()
    peer = PeerLabels(reporter="source", source_workload="frontend",
                      destination_service="product.shop.svc.cluster.local")
    stats.record_request(peer, 200, "-", 3.0)
    stats.record_request(peer, 200, "-", 700.0)
    stats.record_request(peer, 503, "no_healthy_upstream", 0.2)
    stats.gauge_add("hyphal_upstream_cx_active", "product", 2)
    text = stats.render()
    assert ('istio_requests_total{reporter="source",source_workload="frontend"' in text)
    line = next(l for l in text.splitlines()
                if l.startswith("istio_requests_total") and 'response_code="200"' in l)
    assert line.endswith(" 2")
    assert 'response_flags="no_healthy_upstream"' in text
    assert 'le="5"} 1' in text and 'le="1000"} 2' in text and 'le="+Inf"} 2' in text
    assert 'hyphal_upstream_cx_active{cluster_name="product"} 2' in text
    assert stats.requests_total(200) == 2 and stats.requests_total(reporter="destination") == 0


async def test_access_log_buffers_until_flush(tmp_path):
    path = tmp_path / "a.log"
    log = AccessLog(str(path))
    log.log({"status": 200, "reason": "-"})
    assert path.read_text() == ""
    log.flush()
    assert json.loads(path.read_text()) == {"status": 200, "reason": "-"}
    log.log({"status": 404})
    log.close()
    assert path.read_text().count("\n") == 2
