"""The SDK's errors: one base type carrying the server's structured answer (a `metav1.Status`),
and a subclass for each answer a caller acts on differently."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SandboxConflict",
    "SandboxError",
    "SandboxFailed",
    "SandboxForbidden",
    "SandboxInvalid",
    "SandboxNotFound",
    "SandboxTimeout",
    "SandboxUnauthorized",
    "error_for",
]


class SandboxError(Exception):
    """A request about a sandbox failed. `status` is the HTTP status (0 when there was no
    answer), `reason` the Status's reason (`NotFound`, `Forbidden`, ...), `body` all of it."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        reason: str = "",
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.body: Mapping[str, Any] = body or {}


class SandboxNotFound(SandboxError):
    """404: no such Sandbox (or file, or terminal session)."""


class SandboxForbidden(SandboxError):
    """403: RBAC (or a visitor token) does not allow it."""


class SandboxUnauthorized(SandboxError):
    """401: the credentials were not accepted."""


class SandboxConflict(SandboxError):
    """409: the Sandbox exists already, or is not running."""


class SandboxInvalid(SandboxError):
    """400 or 422: the request was refused as malformed."""


class SandboxTimeout(SandboxError):
    """What was waited for did not happen in time."""


class SandboxFailed(SandboxError):
    """The Sandbox turned Failed (or was deleted) while it was waited for."""


_BY_STATUS: dict[int, type[SandboxError]] = {
    400: SandboxInvalid,
    401: SandboxUnauthorized,
    403: SandboxForbidden,
    404: SandboxNotFound,
    409: SandboxConflict,
    422: SandboxInvalid,
}


def error_for(status: int, body: bytes | str | Mapping[str, Any], what: str) -> SandboxError:
    """The error for an HTTP answer `status` with `body` (a Status in JSON, the agent's
    `{"reason", "message"}`, or plain text), about `what` (a path or a description)."""
    parsed: Any = body
    if isinstance(body, bytes | str):
        try:
            parsed = json.loads(body)
        except ValueError:
            text = body.decode(errors="replace") if isinstance(body, bytes) else body
            parsed = {"message": text.strip()[:500]}
    if not isinstance(parsed, Mapping):
        parsed = {"message": str(parsed)}
    message = str(parsed.get("message") or f"{what}: HTTP {status}")
    reason = str(parsed.get("reason") or "")
    kind = _BY_STATUS.get(status, SandboxError)
    return kind(message, status=status, reason=reason, body=parsed)
