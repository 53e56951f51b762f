"""SpiffeId parsing and formatting."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hyphal.identity.spiffe import SpiffeId


def test_parse_round_trips_uri_and_principal() -> None:
    sid = SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/product")
    assert sid == SpiffeId("cluster.local", "shop", "product")
    assert sid.uri == "spiffe://cluster.local/ns/shop/sa/product"
    assert sid.principal == "cluster.local/ns/shop/sa/product"
    assert str(sid) == sid.uri


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "http://cluster.local/ns/shop/sa/product",
        "spiffe://cluster.local/ns/shop",
        "spiffe://cluster.local/ns/shop/sa/product/extra",
        "spiffe://cluster.local/sa/product/ns/shop",
        "spiffe://cluster.local/ns//sa/product",
        "spiffe://cluster.local/ns/shop/sa/",
        "spiffe://Cluster.Local/ns/shop/sa/product",
        "spiffe://cluster.local:443/ns/shop/sa/product",
        "spiffe://user@cluster.local/ns/shop/sa/product",
        "spiffe://cluster.local/ns/shop/sa/product?x=1",
        "spiffe://cluster.local/ns/sh%20op/sa/product",
        "spiffe://cluster.local/ns/../sa/product",
        "spiffe:///ns/shop/sa/product",
    ],
)
def test_parse_rejects_anything_but_the_strict_form(bad: str) -> None:
    with pytest.raises(ValueError, match="SPIFFE"):
        SpiffeId.parse(bad)


def test_constructor_validates_segments() -> None:
    with pytest.raises(ValueError, match="namespace"):
        SpiffeId("cluster.local", "a/b", "x")
    with pytest.raises(ValueError, match="trust domain"):
        SpiffeId("", "a", "x")


def test_frozen_and_hashable() -> None:
    sid = SpiffeId("cluster.local", "a", "b")
    with pytest.raises(AttributeError):
        sid.namespace = "c"  # type: ignore[misc]
    assert {sid, SpiffeId.parse(sid.uri)} == {sid}


_seg = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1
)
_td = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1)


@given(_td, _seg, _seg)
def test_every_valid_id_round_trips(td: str, ns: str, sa: str) -> None:
    assume(ns not in (".", "..") and sa not in (".", ".."))
    sid = SpiffeId(td, ns, sa)
    assert SpiffeId.parse(sid.uri) == sid


@given(st.text(max_size=80))
def test_parse_fails_only_with_value_error(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except ValueError:
        return
    assert sid.uri == text
