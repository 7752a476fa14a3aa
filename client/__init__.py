"""tuxio clients: the Python SDK (async first, with a sync face) and the `kubectl tuxio`
plugin. See docs/clients.md."""

from .aclient import AsyncClient
from .api import ExecResult, SandboxState, VisitorToken
from .errors import (
    SandboxConflict,
    SandboxError,
    SandboxFailed,
    SandboxForbidden,
    SandboxInvalid,
    SandboxNotFound,
    SandboxTimeout,
    SandboxUnauthorized,
)
from .files import AsyncFiles
from .sandbox import AsyncSandbox
from .streams import AsyncTerminal, ExecStream
from .sync import Client, Files, Sandbox, Terminal

__all__ = [
    "AsyncClient",
    "AsyncFiles",
    "AsyncSandbox",
    "AsyncTerminal",
    "Client",
    "ExecResult",
    "ExecStream",
    "Files",
    "Sandbox",
    "SandboxConflict",
    "SandboxError",
    "SandboxFailed",
    "SandboxForbidden",
    "SandboxInvalid",
    "SandboxNotFound",
    "SandboxState",
    "SandboxTimeout",
    "SandboxUnauthorized",
    "Terminal",
    "VisitorToken",
]
