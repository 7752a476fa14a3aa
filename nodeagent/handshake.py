"""The WebSocket handshake's own refusals as the agent's JSON error body.

uvicorn lets the websockets library check an upgrade request before the app sees it (a
malformed Sec-WebSocket-Protocol or Sec-WebSocket-Key, a missing Upgrade header) and refuse it
with a plain-text body; every other refusal of the agent is JSON (`ErrorBody`). This protocol
is uvicorn's sans-I/O one with the refusals rewritten, so that a client gets a `reason` and a
`message` whichever layer said no.
"""

from __future__ import annotations

import http
import json
import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.server import ServerProtocol

from .models import ErrorBody

__all__ = ["JsonRefusalProtocol", "json_refusal"]


def json_refusal(status: int, text: str) -> tuple[http.HTTPStatus, bytes]:
    """The status and JSON body for a handshake refused with `status` and `text`."""
    code = http.HTTPStatus(status)
    message = " ".join(text.split()) or code.phrase
    body = ErrorBody(reason="InvalidHandshake", message=message)
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
        return Response(code.value, code.phrase, headers, body)


class JsonRefusalProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol, refusing with JSON bodies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Made as uvicorn makes its own (extensions, size limit, logger), with JSON refusals.
        self.conn = _JsonServerProtocol(
            extensions=self.conn.available_extensions,
            max_size=self.config.ws_max_size,
            logger=logging.getLogger("uvicorn.error"),
        )
