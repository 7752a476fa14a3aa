"""Which agent endpoints may be used: https:// always; http:// only when explicitly allowed,
and then only on the loopback (a development agent on the same machine). A token sent in the
clear over a network is a token given away.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

__all__ = ["endpoint_refusal"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_refusal(endpoint: str, allow_loopback_plaintext: bool) -> str | None:
    """Why `endpoint` must not be used (None: it may be)."""
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme == "https":
        return None
    if parsed.scheme != "http":
        return f"{endpoint}: not an https:// endpoint"
    if not allow_loopback_plaintext:
        return f"{endpoint}: plaintext http:// agents are refused (use https://)"
    if not _loopback(parsed.hostname or ""):
        return f"{endpoint}: plaintext http:// is allowed on the loopback only"
    return None
