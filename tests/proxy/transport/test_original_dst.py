"""SO_ORIGINAL_DST parsing (sockaddr bytes as the kernel returns them) and the plain case."""

from __future__ import annotations

import socket
import struct

import pytest

from hyphal.proxy.transport.original_dst import original_dst, parse_sockaddr


def sockaddr_in(ip: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip) \
        + bytes(8)


def test_parse_ipv4() -> None:
    assert parse_sockaddr(sockaddr_in("10.96.0.10", 8080)) == ("10.96.0.10", 8080)


def test_parse_ipv6() -> None:
    raw = (struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 443) + bytes(4)
           + socket.inet_pton(socket.AF_INET6, "fd00::1") + bytes(4))
    assert parse_sockaddr(raw) == ("fd00::1", 443)


def test_parse_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="too short"):
        parse_sockaddr(b"\x02\x00")
    with pytest.raises(ValueError, match="family"):
        parse_sockaddr(struct.pack("=H", 99) + bytes(14))


def test_connection_that_was_not_redirected_has_none() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            assert original_dst(accepted) is None
