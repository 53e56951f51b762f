"""SO_ORIGINAL_DST: where a connection redirected by iptables (REDIRECT) was really going.

In a Kubernetes pod the init container redirects outbound TCP to 15001 and inbound TCP to
15006 (hyphal.kube.inject). The accepted socket's local address is then the proxy's own; the
kernel's conntrack entry keeps the original destination, read with getsockopt(SOL_IP,
SO_ORIGINAL_DST) (IPv6: SOL_IPV6, IP6T_SO_ORIGINAL_DST, same number 80). `parse_sockaddr`
is the pure part; `original_dst` the one system call.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

SOL_IP = 0
SOL_IPV6 = 41
SO_ORIGINAL_DST = 80
_SOCKADDR_IN = 16
_SOCKADDR_IN6 = 28

# What the kernel answers for a socket that was not redirected (no NAT conntrack entry, or
# the nf_conntrack module not loaded).
_NOT_REDIRECTED = frozenset({errno.ENOENT, errno.ENOPROTOOPT, errno.EOPNOTSUPP})


def parse_sockaddr(raw: bytes) -> tuple[str, int]:
    """(address, port) from a `struct sockaddr_in` or `sockaddr_in6` as getsockopt returns it.

    The family is in host byte order, the port and address in network order."""
    if len(raw) < 8:
        raise ValueError(f"sockaddr too short ({len(raw)} bytes)")
    (family,) = struct.unpack("=H", raw[:2])
    (port,) = struct.unpack("!H", raw[2:4])
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[4:8])), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        return str(ipaddress.IPv6Address(raw[8:24])), port
    raise ValueError(f"unexpected address family {family} in SO_ORIGINAL_DST")


def original_dst(sock: socket.socket) -> tuple[str, int] | None:
    """The destination before REDIRECT, or None when the connection was not redirected."""
    v6 = sock.family == socket.AF_INET6
    try:
        raw = sock.getsockopt(SOL_IPV6 if v6 else SOL_IP, SO_ORIGINAL_DST,
                              _SOCKADDR_IN6 if v6 else _SOCKADDR_IN)
    except OSError as exc:
        if exc.errno in _NOT_REDIRECTED:
            return None
        raise
    address = parse_sockaddr(raw)
    local = sock.getsockname()[:2]
    return None if address == (local[0], local[1]) else address
