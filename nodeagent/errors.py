"""Errors are types. The HTTP layer maps them to status codes; nothing below it knows HTTP."""

from __future__ import annotations

__all__ = [
    "AgentError",
    "ContainerNotFound",
    "ContainerNotRunning",
    "ContainerQuarantined",
    "DiskBelowReserve",
    "DiskSetupFailed",
    "FileNotFound",
    "FileTooLarge",
    "HostPrerequisiteMissing",
    "InsufficientStorage",
    "InvalidExecRequest",
    "InvalidPath",
    "InvalidSpec",
    "IsADirectory",
    "LimitsNotInForce",
    "LxcCommandFailed",
    "NoAcceptableSubprotocol",
    "OutputBudgetExhausted",
    "PermissionDenied",
    "PreconditionFailed",
    "ReadOnlyFilesystem",
    "SessionNotFound",
    "SpecConflict",
    "TemplateBuildFailed",
    "TooManySessions",
    "UnknownTemplate",
    "UnsupportedFileType",
    "UpgradeRequired",
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


class ContainerQuarantined(AgentError):
    """The container's record was found corrupt or truncated at start: the agent does not
    know what it is, so it neither runs nor changes it. Only DELETE is taken."""

    reason = "ContainerQuarantined"


class ContainerNotRunning(AgentError):
    """The operation needs a running container."""

    reason = "ContainerNotRunning"


class LxcCommandFailed(AgentError):
    """An lxc tool exited non-zero; the message carries its error output."""

    reason = "LxcCommandFailed"


class LimitsNotInForce(AgentError):
    """Read back from the cgroup files, the limits differ from what was asked for."""

    reason = "LimitsNotInForce"


class DiskBelowReserve(AgentError):
    """The data directory's free space or inodes are below the host's reserve: no new
    container until some are freed."""

    reason = "DiskBelowReserve"


class DiskSetupFailed(AgentError):
    """The disk backend could not make or mount a container's limited writable layer."""

    reason = "DiskSetupFailed"


class TemplateBuildFailed(AgentError):
    """Building a template failed."""

    reason = "TemplateBuildFailed"


class HostPrerequisiteMissing(AgentError):
    """The host lacks something the agent needs (lxc tools, a subordinate id range, ...)."""

    reason = "HostPrerequisiteMissing"


# ----- streams ----------------------------------------------------------------------------


class UpgradeRequired(AgentError):
    """A streaming route was asked for without a WebSocket upgrade."""

    reason = "UpgradeRequired"


class NoAcceptableSubprotocol(AgentError):
    """The client offers no remote-command subprotocol the agent speaks."""

    reason = "NoAcceptableSubprotocol"


class InvalidExecRequest(AgentError):
    """The exec's query parameters are malformed or contradict each other."""

    reason = "InvalidExecRequest"


class TooManySessions(AgentError):
    """A cap on concurrent sessions (per container or per agent) is reached."""

    reason = "TooManySessions"


class OutputBudgetExhausted(AgentError):
    """The output all commands may hold at once (output_budget_bytes) has no room for this."""

    reason = "OutputBudgetExhausted"


class SessionNotFound(AgentError):
    """No terminal session of that id in the container."""

    reason = "SessionNotFound"


# ----- files ------------------------------------------------------------------------------


class InvalidPath(AgentError):
    """A path that is not absolute and normalised, or that resolves through a magic link."""

    reason = "InvalidPath"


class FileNotFound(AgentError):
    """Nothing at that path inside the container."""

    reason = "FileNotFound"


class UnsupportedFileType(AgentError):
    """A device, FIFO, socket or a file of a pseudo filesystem (proc, sysfs, cgroup, ...)."""

    reason = "UnsupportedFileType"


class IsADirectory(AgentError):
    """The operation takes a file and the path is a directory."""

    reason = "IsADirectory"


class FileTooLarge(AgentError):
    """Above the agent's file size cap."""

    reason = "FileTooLarge"


class PermissionDenied(AgentError):
    """The kernel refused the operation (an immutable file, say)."""

    reason = "PermissionDenied"


class ReadOnlyFilesystem(AgentError):
    """The path is on a read-only mount."""

    reason = "ReadOnlyFilesystem"


class InsufficientStorage(AgentError):
    """No space or inodes left (the container's quota, or the host's disk)."""

    reason = "InsufficientStorage"
