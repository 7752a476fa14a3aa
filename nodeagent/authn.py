"""The token check in front of everything: every request but the health probe, HTTP or
WebSocket, is answered 401 unless it carries one of the agent's tokens, before any routing,
body parsing or validation (so that what a caller without the token learns is only that it
needs one, whatever it sent). The routes check again (deps.Authenticated), which is also how
the OpenAPI document names the security scheme.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .credentials import TokenFile
from .models import ErrorBody

__all__ = ["OPEN_PATHS", "RequireToken", "bearer", "unauthorized_body"]

# Answered without a token: the kubelet's (and the operator's) liveness probe.
OPEN_PATHS = frozenset({"/healthz"})
UNAUTHORIZED = "a valid 'Authorization: Bearer <token>' is required"


def bearer(authorization: str) -> bytes:
    """The credentials of an `Authorization: Bearer <token>` header (empty for any other)."""
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip().encode() if scheme.lower() == "bearer" else b""


def unauthorized_body() -> bytes:
    body = ErrorBody(reason="Unauthorized", message=UNAUTHORIZED)
    return json.dumps(body.model_dump(mode="json", exclude_none=True)).encode()


class RequireToken:
    """ASGI middleware: 401 with the agent's JSON error body (for a WebSocket, as the denial
    response of its upgrade) unless the request carries one of `tokens`."""

    def __init__(self, app: ASGIApp, tokens: TokenFile) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = bearer(Headers(scope=scope).get("authorization", ""))
        if self.tokens.accepts(given):
            await self.app(scope, receive, send)
            return
        body = unauthorized_body()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
