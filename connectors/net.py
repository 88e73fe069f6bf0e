"""Where Seqbridge may send requests: http(s) only, and no private addresses unless allowed
(a webhook step or a remote target must not become a way into the private network)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class AddressRefused(Exception):
    """``transient`` is True when the name could not be resolved (that may pass)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


def check_address(url: str, allow_private: bool) -> None:
    """Raise :class:`AddressRefused` for a non-http(s) URL, or a host that resolves to a private,
    loopback, link-local, multicast or reserved address (unless ``allow_private``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressRefused(f"not an http(s) URL: {url}")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror as error:
        raise AddressRefused(f"cannot resolve {parts.hostname}: {error}", transient=True) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        # Only globally routable unicast addresses: not private, loopback, link-local, shared
        # (100.64/10), documentation, benchmarking, reserved or unspecified ones, nor multicast.
        if not address.is_global or address.is_multicast:
            raise AddressRefused(
                f"{parts.hostname} resolves to {address}, a private address; set SEQBRIDGE_ALLOW_PRIVATE_TARGETS=true "
                "to allow it"
            )
