"""Compile the transparent-capture fields of a Listener: `use_original_dst`, `bind_to_port`
and `additional_addresses` (Envoy's virtualOutbound/virtualInbound scheme, used when iptables
REDIRECTs a workload's traffic to its sidecar; hyphal.proxy.capture serves them)."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.listener.v3 import listener_pb2

from hyphal.proxy.compile.common import Where
from hyphal.proxy.runtime.tables import ListenerSpec

FIELDS = frozenset({"use_original_dst", "bind_to_port", "additional_addresses"})


def apply(lst: listener_pb2.Listener, w: Where, spec: ListenerSpec) -> ListenerSpec:
    """`spec` with the capture fields of `lst`; raises CompileError naming the field."""
    original_dst = lst.use_original_dst.value if lst.HasField("use_original_dst") else False
    bind = lst.bind_to_port.value if lst.HasField("bind_to_port") else True
    extra: list[tuple[str, int]] = []
    for i, add in enumerate(lst.additional_addresses):
        path = f"additional_addresses[{i}].address"
        w.only(add, {"address"}, f"additional_addresses[{i}]")
        w.only(add.address, {"socket_address"}, path)
        sa = add.address.socket_address
        w.only(sa, {"address", "port_value", "protocol"}, f"{path}.socket_address")
        if not sa.address or not 0 < sa.port_value < 65536:
            raise w.error(f"{path}.socket_address", "needs an address and a port in 1..65535")
        extra.append((sa.address, sa.port_value))
    if original_dst and not bind:
        raise w.error("bind_to_port", "a use_original_dst listener must bind its port (it is "
                      "where iptables redirects connections to)")
    if extra and bind:
        raise w.error("additional_addresses", "only listeners with bind_to_port: false may "
                      "have additional addresses (they match captured connections only)")
    if (original_dst, bind, tuple(extra)) == (False, True, ()):
        return spec
    return replace(spec, use_original_dst=original_dst, bind_to_port=bind,
                   additional_addresses=tuple(extra))
