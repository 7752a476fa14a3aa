"""The visitor's address: the peer's, or X-Forwarded-For's when the peer is a trusted proxy.

The header is read from the right: each trusted proxy appended the address it saw, so the
rightmost address that is not a trusted proxy is the first one no proxy of ours vouches for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["client_address"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: Sequence[Network]) -> str:
    """The address to place and rate-limit the visitor by."""
    seen = _parse(peer or "")
    if seen is None:
        return peer or "unknown"
    if not forwarded_for or not _trusted(seen, proxies):
        return str(seen)
    for hop in reversed(forwarded_for.split(",")):
        address = _parse(hop)
        if address is None:
            break  # a malformed hop: believe nothing left of it
        seen = address
        if not _trusted(address, proxies):
            break
    return str(seen)
