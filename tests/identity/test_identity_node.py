"""The `PORTS` node-metadata entry: what the local runner writes, the control plane reads back."""

from __future__ import annotations

import pytest
from google.protobuf import json_format, struct_pb2

from hyphal.identity.node import NodePort


def test_entry_survives_a_protobuf_struct_round_trip() -> None:
    port = NodePort("http", 8080, "HTTP", 21001, 21002)
    md = struct_pb2.Struct()
    md.update({"PORTS": [port.to_metadata()]})  # numbers become floats on the wire
    entry = json_format.MessageToDict(md)["PORTS"][0]
    assert isinstance(entry["port"], float)
    assert NodePort.from_metadata(entry) == port


def test_defaults_follow_the_conventions() -> None:
    got = NodePort.from_metadata({"port": 9090.0, "protocol": "grpc"})
    assert got == NodePort(name="", port=9090, protocol="GRPC", app_port=9090, inbound_port=0)


@pytest.mark.parametrize(
    ("entry", "error"),
    [({"name": "http"}, KeyError), ({"port": "eighty"}, ValueError), ({"port": None}, TypeError)],
)
def test_a_bad_port_raises_for_the_caller_to_name(entry: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        NodePort.from_metadata(entry)
