"""The gateway's errors: one type per answer, each with its HTTP code and Kubernetes reason.

They are raised anywhere below the edge and turned into a `metav1.Status` body (which carries
`reason` and `message`, as every tuxio error body does) by the two apps' middleware only.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AgentRefused",
    "AgentUnreachable",
    "BadRequest",
    "Forbidden",
    "GatewayError",
    "Invalid",
    "NotFound",
    "NotReady",
    "SandboxNotRunning",
    "Unauthorized",
    "status_body",
]


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A `metav1.Status` of failure, as the Kubernetes API server answers errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class GatewayError(Exception):
    """An answer other than success; `status` and `reason` say which."""

    status: ClassVar[int] = 500
    reason: ClassVar[str] = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> int:
        """The HTTP status of the answer."""
        return self.status

    def body(self) -> dict[str, Any]:
        return status_body(self.code, self.reason, self.message)


class BadRequest(GatewayError):
    """The request is malformed (a query parameter, a subprotocol, a path)."""

    status = 400
    reason = "BadRequest"


class Unauthorized(GatewayError):
    """Who is asking is not established: no front-proxy certificate, or a visitor token that
    is missing, expired, forged or signed with a key the gateway does not hold."""

    status = 401
    reason = "Unauthorized"


class Forbidden(GatewayError):
    """Known, and not allowed: RBAC said no, an Origin is not listed, a visitor token is for
    another sandbox or lacks the scope."""

    status = 403
    reason = "Forbidden"


class NotFound(GatewayError):
    """No such Sandbox (or path)."""

    status = 404
    reason = "NotFound"


class SandboxNotRunning(GatewayError):
    """The Sandbox exists but has no running container to connect to."""

    status = 409
    reason = "Conflict"


class Invalid(GatewayError):
    """A request body that does not validate (a SandboxToken)."""

    status = 422
    reason = "Invalid"


class NotReady(GatewayError):
    """The gateway cannot serve yet: its caches or keys are not loaded."""

    status = 503
    reason = "ServiceUnavailable"


class AgentUnreachable(GatewayError):
    """The sandbox's agent did not answer, or answered with a server error."""

    status = 502
    reason = "ServiceUnavailable"


class AgentRefused(GatewayError):
    """The agent refused the request with a 4xx (a bad command, a file too large, too many
    sessions): its code and reason are passed on as they are."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.agent_status = status
        self.agent_reason = reason

    @property
    def code(self) -> int:
        return self.agent_status

    def body(self) -> dict[str, Any]:
        return status_body(self.agent_status, self.agent_reason, self.message)
