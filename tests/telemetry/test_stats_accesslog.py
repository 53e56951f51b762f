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
    line = next(row for row in text.splitlines()
                if row.startswith("istio_requests_total") and 'response_code="200"' in row)
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


def test_http_lines_match_the_dict_encoder(tmp_path):
    """The request path's encoder (cached fragments, text buffered until flush) writes the
    same JSON as the dict encoder, field for field and in `FIELDS` order."""
    from hyphal.telemetry.accesslog import FIELDS, http_line

    path = tmp_path / "a.log"
    log = AccessLog(str(path))
    cases = [
        (1700000000.0, b"rid-1", b"GET", "api:8080", "/a?b=1", b"1.1", "10.0.0.1",
         "spiffe://td/ns/x/sa/y", "inbound|8080", "default", "inbound|8080||",
         "127.0.0.1:8080", 200, "-", 0, 18, 1.25, 0.5),
        (1700000000.9996, b"", b"POST", 'a"b\\c\u00e9', "/\u2028x", b"1.0", "::1", None,
         "outbound", "r", "c", "-", 503, "no_healthy_upstream", 7, 0, 0.0004, -1.0),
    ]
    for (start, rid, method, authority, target, version, peer, identity, listener, route,
         cluster, upstream, status, reason, b_in, b_out, dur, up_ms) in cases:
        log.http(start, rid, method, authority, target, version, peer, identity, listener,
                 route, cluster, upstream, status, reason, b_in, b_out, dur, up_ms)
    log.close()  # no loop running: lines were written at once, close writes nothing more
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2
    for line, case in zip(lines, cases, strict=True):
        (start, rid, method, authority, target, version, peer, identity, listener, route,
         cluster, upstream, status, reason, b_in, b_out, dur, up_ms) = case
        protocol = f"HTTP/{version.decode()}"
        assert line == http_line(start, rid.decode() or "-", method.decode(), authority,
                                 target, protocol, peer, identity or "-", listener, route,
                                 cluster, upstream, status, reason, b_in, b_out, dur,
                                 up_ms if up_ms >= 0 else None)
        entry = json.loads(line)
        assert tuple(entry) == FIELDS
        assert (entry["request_id"], entry["authority"], entry["path"],
                entry["downstream_identity"]) == (rid.decode() or "-", authority, target,
                                                  identity or "-")
        assert entry["duration_ms"] == round(dur, 3)
        assert entry["upstream_service_time_ms"] == (round(up_ms, 3) if up_ms >= 0 else None)
    assert json.loads(lines[1])["start_time"] == "2023-11-14T22:13:20.999Z"
