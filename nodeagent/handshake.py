"""The WebSocket handshake's own refusals as the agent's JSON error body.

uvicorn lets the websockets library check an upgrade request before the app sees it (a
malformed Sec-WebSocket-Protocol or Sec-WebSocket-Key, a missing Upgrade header) and refuse it
with a plain-text body; every other refusal of the agent is JSON (`ErrorBody`). This protocol
is uvicorn's sans-I/O one with the refusals rewritten, so that a client gets a `reason` and a
`message` whichever layer said no; and with the token checked first, so that an upgrade
without one is answered 401 however malformed the rest of it is (as every HTTP request is,
authn.py).
"""

from __future__ import annotations

import http
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from .models import ErrorBody

__all__ = ["JsonRefusalProtocol", "json_refusal", "json_refusal_protocol"]


def json_refusal(status: int, text: str) -> tuple[http.HTTPStatus, bytes]:
    """The status and JSON body for a handshake refused with `status` and `text`."""
    code = http.HTTPStatus(status)
    message = " ".join(text.split()) or code.phrase
    reason = "Unauthorized" if code == http.HTTPStatus.UNAUTHORIZED else "InvalidHandshake"
    body = ErrorBody(reason=reason, message=message)
    return code, json.dumps(body.model_dump(mode="json", exclude_none=True)).encode()


class _JsonServerProtocol(ServerProtocol):
    def reject(self, status: http.HTTPStatus | int, text: str) -> Response:
        response = super().reject(status, text)
        code, body = json_refusal(status, text)
        headers = Headers(
            [
                (name, value)
                for name, value in response.headers.raw_items()
                if name.lower() not in ("content-type", "content-length")
            ]
        )
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(body))
        if code == http.HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = "Bearer"
        return Response(code.value, code.phrase, headers, body)


class JsonRefusalProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol, refusing with JSON bodies, and an upgrade whose
    Authorization header `authorized` does not accept with 401."""

    authorized: ClassVar[Callable[[str], bool]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Made as uvicorn makes its own (extensions, size limit, logger), with JSON refusals.
        self.conn = _JsonServerProtocol(
            extensions=self.conn.available_extensions,
            max_size=self.config.ws_max_size,
            logger=logging.getLogger("uvicorn.error"),
        )

    def handle_connect(self, event: Request) -> None:
        if type(self).authorized(event.headers.get("Authorization", "")):
            super().handle_connect(event)
            return
        # As uvicorn answers a refused handshake: the response, then the connection closed.
        self.request = event
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.conn.send_response(self.conn.reject(http.HTTPStatus.UNAUTHORIZED, UNAUTHORIZED))
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()


UNAUTHORIZED = "a valid 'Authorization: Bearer <token>' is required"


def json_refusal_protocol(authorized: Callable[[str], bool]) -> type[JsonRefusalProtocol]:
    """The protocol class for uvicorn's `ws` setting, with the token check `authorized` (given
    an Authorization header's value)."""
    return type(
        "AgentWebSocketProtocol", (JsonRefusalProtocol,), {"authorized": staticmethod(authorized)}
    )
