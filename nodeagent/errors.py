"""Errors are types. The HTTP layer maps them to status codes; nothing below it knows HTTP."""

from __future__ import annotations

__all__ = [
    "AgentError",
    "ContainerNotFound",
    "ContainerNotRunning",
    "HostPrerequisiteMissing",
    "InvalidSpec",
    "LimitsNotInForce",
    "LxcCommandFailed",
    "PreconditionFailed",
    "SpecConflict",
    "TemplateBuildFailed",
    "UnknownTemplate",
]


class AgentError(Exception):
    """Base of every error the agent reports; `reason` is the machine-readable name."""

    reason = "AgentError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSpec(AgentError):
    """The spec is well-formed but this host cannot honour it (too many cpus, ...)."""

    reason = "InvalidSpec"


class UnknownTemplate(AgentError):
    """The spec names a template that is not on this host."""

    reason = "UnknownTemplate"


class SpecConflict(AgentError):
    """The spec asks for a change that cannot be made in place (another template)."""

    reason = "SpecConflict"


class PreconditionFailed(AgentError):
    """An If-Match precondition does not hold: the container is gone or converged to another
    spec since the caller looked (another caller adopted it, say). Nothing was changed."""

    reason = "PreconditionFailed"


class ContainerNotFound(AgentError):
    """No container of that name on this host."""

    reason = "ContainerNotFound"


class ContainerNotRunning(AgentError):
    """The operation needs a running container."""

    reason = "ContainerNotRunning"


class LxcCommandFailed(AgentError):
    """An lxc tool exited non-zero; the message carries its error output."""

    reason = "LxcCommandFailed"


class LimitsNotInForce(AgentError):
    """Read back from the cgroup files, the limits differ from what was asked for."""

    reason = "LimitsNotInForce"


class TemplateBuildFailed(AgentError):
    """Building a template failed."""

    reason = "TemplateBuildFailed"


class HostPrerequisiteMissing(AgentError):
    """The host lacks something the agent needs (lxc tools, a subordinate id range, ...)."""

    reason = "HostPrerequisiteMissing"
