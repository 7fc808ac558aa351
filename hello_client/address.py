"""The server address hello-chat accepts: ``HOST[:PORT]``, checked before any connection.

gRPC would take almost anything as a target and fail later with resolver
text; a person who typed ``:8080`` or ``http://host`` should learn at once
what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import re

from hello_protocol.wire import DEFAULT_PORT

__all__ = ["server_target"]

# A host name (RFC 1123 labels, and "_" which some local names use) or IPv4.
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def server_target(address: str) -> str:
    """``host:port`` for gRPC from ``HOST[:PORT]``; a bare host gets the default port.

    IPv6 literals go in brackets (``[::1]:8080``). Raises ValueError with a
    message naming the problem.
    """
    if "://" in address:
        raise ValueError("give HOST:PORT without a scheme such as http://")
    if address.startswith("["):
        literal, bracket, rest = address[1:].partition("]")
        if not bracket:
            raise ValueError("an IPv6 address needs its closing bracket: [::1]:8080")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise ValueError(f"{literal!r} in brackets is not an IPv6 address") from None
        host = f"[{literal}]"
        if rest and not rest.startswith(":"):
            raise ValueError("after ']' comes ':PORT' or nothing")
        port = rest[1:] if rest else str(DEFAULT_PORT)
    elif address.count(":") > 1:
        raise ValueError("put an IPv6 address in brackets: [::1]:8080")
    else:
        host, colon, port = address.partition(":")
        if not host:
            raise ValueError("the host is missing (give HOST:PORT, e.g. 127.0.0.1:8080)")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name or IP address")
        if not colon:
            port = str(DEFAULT_PORT)
    if not port:
        raise ValueError("the port after ':' is missing")
    if not (port.isascii() and port.isdigit()):
        raise ValueError(f"the port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"the port {port} is not in 1..65535")
    return f"{host}:{int(port)}"
