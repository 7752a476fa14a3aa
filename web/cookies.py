"""The session cookie: a random visitor session id, signed with HMAC-SHA256 so that nobody
can pick another visitor's id (it names their sandbox)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["SessionSigner"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class SessionSigner:
    """Makes and checks `<id>.<signature>` values."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the cookie signing key must be at least 32 bytes")
        self._key = key

    def _signature(self, session: str) -> str:
        return _b64(hmac.new(self._key, session.encode(), hashlib.sha256).digest())

    def new(self) -> tuple[str, str]:
        """A fresh session id and its cookie value."""
        session = secrets.token_hex(16)
        return session, f"{session}.{self._signature(session)}"

    def verify(self, value: str | None) -> str | None:
        """The session id of a cookie value we signed, else None."""
        if not value or value.count(".") != 1:
            return None
        session, signature = value.split(".")
        if len(session) != 32 or not hmac.compare_digest(signature, self._signature(session)):
            return None
        return session
