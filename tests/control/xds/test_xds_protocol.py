"""The sans-I/O ADS stream core, the debouncer, snapshots and the wire encoder, driven directly."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from xds_helpers import cla, cluster, listener, names_of, node, request, route, secret, snap

from hyphal.control.xds.debounce import Debouncer
from hyphal.control.xds.protocol import AdsProtocolError, AdsStream
from hyphal.control.xds.snapshot import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    NodeInfo,
    Snapshot,
)
from hyphal.control.xds.wire import ResponseEncoder, decode


def base() -> Snapshot:
    return snap(cluster("a"), cluster("b"), cla("a", 1), cla("b", 2), listener("l"), route("r"))


def test_wildcard_then_ack_then_no_answer() -> None:
    s = AdsStream("n", base())
    out = s.receive(request(CLUSTER))
    assert out.kind == "subscribe" and [r.names for r in out.responses] == [("a", "b")]
    r = out.responses[0]
    ack = s.receive(request(CLUSTER, nonce=r.nonce, version=r.version))
    assert ack.kind == "ack" and ack.responses == ()
    [st_] = s.status()
    assert st_.acked_version == r.version == base().version(CLUSTER) and st_.subscribed is None


def test_nack_keeps_state_and_is_not_answered() -> None:
    s = AdsStream("n", base())
    r = s.receive(request(CLUSTER)).responses[0]
    nack = s.receive(request(CLUSTER, nonce=r.nonce, error="boom"))
    assert nack.kind == "nack" and nack.responses == ()
    assert nack.nacked_version == r.version and nack.nack_message == "boom"
    assert s.update(base()) == ()  # same content: not re-sent
    [st_] = s.status()
    assert st_.acked_version is None and st_.last_nack == "boom"


def test_stale_nonce_is_ignored_even_with_new_names() -> None:
    s = AdsStream("n", base())
    r1 = s.receive(request(ENDPOINT, ["a"])).responses[0]
    r2 = s.receive(request(ENDPOINT, ["a", "b"], nonce=r1.nonce)).responses[0]
    assert r2.names == ("a", "b")
    assert s.receive(request(ENDPOINT, ["b"], nonce=r1.nonce)).kind == "stale"
    assert s.status()[0].subscribed == ("a", "b")


def test_names_change_with_current_nonce_is_answered_but_unchanged_result_is_not() -> None:
    s = AdsStream("n", base())
    r1 = s.receive(request(ROUTE, ["r"])).responses[0]
    # Adding a name that does not exist yet changes nothing the client would receive.
    out = s.receive(request(ROUTE, ["r", "later"], nonce=r1.nonce, version=r1.version))
    assert out.kind == "ack" and out.responses == ()
    pushed = s.update(snap(cluster("a"), route("r"), route("later")))
    assert [r.names for r in pushed] == [("later", "r")]


def test_empty_nonce_on_known_type_is_answered_again() -> None:
    s = AdsStream("n", base())
    s.receive(request(CLUSTER))
    again = s.receive(request(CLUSTER))
    assert again.kind == "request" and len(again.responses) == 1


def test_named_subscription_waits_for_existence_then_removal_is_sent() -> None:
    s = AdsStream("n", base())
    assert s.receive(request(LISTENER, ["x:1"])).responses == ()
    [r] = s.update(snap(listener("x:1"), listener("y")))
    assert r.names == ("x:1",)
    [gone] = s.update(snap(listener("y")))
    assert gone.type_url == LISTENER and gone.names == ()
    assert s.update(snap()) == ()  # already told: nothing new


def test_wildcard_rules_for_lds_cds() -> None:
    s = AdsStream("n", base())
    r = s.receive(request(LISTENER, ["*"])).responses[0]
    assert r.names == ("l",)
    # An explicitly named subscription, then an empty list = unsubscribed from everything.
    t = AdsStream("n", base())
    r1 = t.receive(request(CLUSTER, ["a"])).responses[0]
    assert r1.names == ("a",)
    out = t.receive(request(CLUSTER, [], nonce=r1.nonce))
    assert out.responses == () and t.status()[0].subscribed == ()
    # Legacy wildcard stays wildcard while the client keeps sending empty lists.
    u = AdsStream("n", base())
    w = u.receive(request(CLUSTER)).responses[0]
    u.receive(request(CLUSTER, nonce=w.nonce))
    assert u.status()[0].subscribed is None
    # EDS/RDS/SDS have no wildcard: empty means nothing.
    assert AdsStream("n", base()).receive(request(ENDPOINT)).responses == ()


def test_update_sends_only_changed_types_in_make_before_break_order() -> None:
    s = AdsStream("n", base())
    for t, names in ((ROUTE, ["r"]), (LISTENER, []), (ENDPOINT, ["a"]), (CLUSTER, [])):
        s.receive(request(t, names))
    s.receive(request(SECRET, ["ROOTCA"]))  # not there yet
    changed = snap(
        secret("ROOTCA"),
        cluster("a", 5),
        cluster("b"),
        cla("a", 9),
        cla("b", 2),
        listener("l", 7),
        route("r", "z"),
    )
    out = s.update(changed)
    assert [r.type_url for r in out] == [SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE]
    # Endpoint "b" changes, but this stream only watches "a": nothing to send.
    only_b = snap(
        secret("ROOTCA"),
        cluster("a", 5),
        cluster("b"),
        cla("a", 9),
        cla("b", 3),
        listener("l", 7),
        route("r", "z"),
    )
    assert s.update(only_b) == ()
    nonces = [r.nonce for r in out]
    assert len(set(nonces)) == len(nonces)


def test_bad_type_urls_are_protocol_errors() -> None:
    s = AdsStream("n", base())
    with pytest.raises(AdsProtocolError, match="unsupported type_url 'x'"):
        s.receive(request("x"))
    with pytest.raises(AdsProtocolError, match="type_url is empty"):
        s.receive(request(""))


def test_snapshot_versions_are_content_hashes() -> None:
    a, b = base(), base()
    assert a.versions == b.versions
    assert a.version_for(CLUSTER, ("a", "b")) == a.version(CLUSTER)
    assert a.version_for(CLUSTER, ("a",)) != a.version(CLUSTER)
    c = snap(cluster("a", 9), cluster("b"))
    assert c.version(CLUSTER) != a.version(CLUSTER)
    assert c.version_for(CLUSTER, ("b",)) == a.version_for(CLUSTER, ("b",))
    assert a.select(CLUSTER, frozenset({"b", "zz"})) == ("b",)
    assert a.version(SECRET) == snap().version(SECRET)


def test_node_info_from_proto() -> None:
    info = NodeInfo.from_proto(
        node(
            "w-0.shop",
            NAMESPACE="shop",
            SERVICE_ACCOUNT="sa",
            PROXY_MODE="sidecar",
            LABELS={"app": "w"},
            PORTS=[{"name": "http", "port": 8080}],
        ),
        peer_identity="spiffe://cluster.local/ns/shop/sa/sa",
    )
    assert (info.id, info.namespace, info.service_account, info.proxy_mode) == (
        "w-0.shop",
        "shop",
        "sa",
        "sidecar",
    )
    assert info.metadata["LABELS"] == {"app": "w"}
    assert info.metadata["PORTS"][0]["port"] == 8080
    assert NodeInfo.from_proto(node("p")).proxy_mode == "grpc"
    assert hash(info) == hash(info)  # usable as a cache key


@given(st.text(max_size=300))
def test_encoded_response_carries_the_nonce(nonce: str) -> None:
    s = AdsStream("n", base())
    r = replace(s.receive(request(CLUSTER)).responses[0], nonce=nonce)
    msg = decode(ResponseEncoder().encode(r))
    assert msg.nonce == nonce and msg.version_info == r.version and msg.type_url == CLUSTER
    assert names_of(msg) == ["a", "b"]


def test_encoder_shares_bodies_between_streams() -> None:
    enc = ResponseEncoder()
    snapshot = base()
    for i in range(3):
        r = AdsStream(f"n{i}", snapshot).receive(request(CLUSTER)).responses[0]
        enc.encode(r)
    assert (enc.misses, enc.hits) == (1, 2)


def test_debouncer_quiet_window_and_max_delay() -> None:
    d = Debouncer(quiet=0.1, max_delay=0.5)
    assert d.due_in(0.0) is None
    d.notify(1.0)
    assert d.due_in(1.0) == pytest.approx(0.1)
    d.notify(1.05)
    assert d.due_in(1.05) == pytest.approx(0.1)
    for t in (1.1, 1.2, 1.3, 1.4, 1.45):
        d.notify(t)
    assert d.due_in(1.45) == pytest.approx(0.05)  # capped at first + 0.5
    assert d.due_in(2.0) == 0.0
    d.fire()
    assert not d.pending and d.due_in(2.0) is None
    with pytest.raises(ValueError, match="max_delay"):
        Debouncer(quiet=1.0, max_delay=0.5)
