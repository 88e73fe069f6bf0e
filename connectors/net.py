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
        address = ipaddress.ip_address(info[4][0])
        if (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_reserved or address.is_unspecified):  # fmt: skip
            raise AddressRefused(
                f"{parts.hostname} resolves to {address}, a private address; set SEQBRIDGE_ALLOW_PRIVATE_TARGETS=true "
                "to allow it"
            )
