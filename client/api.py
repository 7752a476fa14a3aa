"""Pure request building and answer reading, shared by every I/O path of the SDK: the paths of
Sandboxes and of their subresources, a Sandbox manifest from `create`'s arguments, the exec
and terminal queries, the token request, and what a Sandbox's status says."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tuxio.common.remotecommand import ExecOptions, encode_exec_query

__all__ = [
    "GROUP",
    "SCOPES",
    "SUBRESOURCES",
    "VERSION",
    "ExecResult",
    "SandboxState",
    "VisitorToken",
    "exec_query",
    "files_query",
    "sandbox_manifest",
    "sandbox_path",
    "sandboxes_path",
    "state_of",
    "subresource_path",
    "terminal_query",
    "token_of",
    "token_request",
]

GROUP, VERSION = "tux.io", "v1alpha1"
SUBRESOURCES = "subresources.tux.io/v1alpha1"
SCOPES = ("terminal", "exec", "files")
Scope = Literal["terminal", "exec", "files"]
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _name(value: str, what: str) -> str:
    if len(value) > 63 or _NAME.match(value) is None:
        raise ValueError(f"{what} {value!r} is not a DNS-1123 label")
    return value


def sandboxes_path(namespace: str) -> str:
    """The collection of Sandboxes in `namespace`."""
    return f"/apis/{GROUP}/{VERSION}/namespaces/{_name(namespace, 'namespace')}/sandboxes"


def sandbox_path(namespace: str, name: str) -> str:
    """One Sandbox."""
    return f"{sandboxes_path(namespace)}/{_name(name, 'sandbox name')}"


def subresource_path(namespace: str, name: str, sub: str) -> str:
    """A subresource the gateway serves through the API server (exec, terminal, files, token)."""
    ns, sandbox = _name(namespace, "namespace"), _name(name, "sandbox name")
    return f"/apis/{SUBRESOURCES}/namespaces/{ns}/sandboxes/{sandbox}/{sub}"


def sandbox_manifest(
    *,
    name: str | None = None,
    generate_name: str | None = None,
    template: str | None = None,
    pool: str | None = None,
    client_ip: str | None = None,
    ttl_seconds: int | None = None,
    cpus: int | None = None,
    memory: str | None = None,
    pids: int | None = None,
    resources: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    host_selector: Mapping[str, str] | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    """A Sandbox from `create`'s arguments: exactly one of `template` and `pool`, a name or a
    prefix to generate one from. The API server validates the rest (its CRD schema and rules
    give the readable messages)."""
    if (template is None) == (pool is None):
        raise ValueError("give exactly one of template and pool")
    if (name is None) == (generate_name is None):
        raise ValueError("give exactly one of name and generate_name")
    metadata: dict[str, Any] = {"name": name} if name else {"generateName": generate_name}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: dict[str, Any] = {"template": template} if template else {"poolRef": {"name": pool}}
    wanted = dict(resources or {})
    for key, value in (("cpus", cpus), ("memory", memory), ("pids", pids)):
        if value is not None:
            wanted[key] = value
    if wanted:
        spec["resources"] = wanted
    if ttl_seconds is not None:
        spec["lifetime"] = {"ttlSeconds": ttl_seconds}
    placement: dict[str, Any] = {}
    if client_ip is not None:
        placement["clientIP"] = client_ip
    if region is not None:
        placement["region"] = region
    if host_selector:
        placement["hostSelector"] = dict(host_selector)
    if placement:
        spec["placement"] = placement
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Sandbox",
        "metadata": metadata,
        "spec": spec,
    }


@dataclass(frozen=True, slots=True)
class SandboxState:
    """What a Sandbox object says of itself."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    phase: str | None
    host: str | None
    ready: bool
    message: str
    deleting: bool


def state_of(body: Mapping[str, Any]) -> SandboxState:
    """The state of a Sandbox object as the API server returned it."""
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    ready = next(
        (
            c
            for c in status.get("conditions") or []
            if isinstance(c, Mapping) and c.get("type") == "Ready"
        ),
        None,
    )
    message = str(status.get("message") or (ready or {}).get("message") or "")
    return SandboxState(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        uid=str(metadata.get("uid", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        phase=status.get("phase"),
        host=status.get("host"),
        ready=ready is not None and ready.get("status") == "True",
        message=message,
        deleting=bool(metadata.get("deletionTimestamp")),
    )


def exec_query(
    command: Sequence[str],
    *,
    stdin: bool,
    tty: bool = False,
    env: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The query of an exec (the kubelet's parameters, as the gateway takes them)."""
    if not command:
        raise ValueError("command is empty: give the program and its arguments")
    options = ExecOptions(
        command=tuple(command),
        stdin=stdin,
        stdout=True,
        stderr=not tty,
        tty=tty,
        env=tuple((env or {}).items()),
    )
    return encode_exec_query(options)


def terminal_query(
    session: str, command: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """The query of a terminal: its session id, and the command (the login shell if none)."""
    query = [("session", session)]
    query += [("command", arg) for arg in command]
    query += [("env", f"{key}={value}") for key, value in (env or {}).items()]
    return query


def files_query(path: str, mode: int | None = None) -> list[tuple[str, str]]:
    """The query of a file request: an absolute path inside the sandbox, a mode for a write."""
    if not path.startswith("/"):
        raise ValueError(f"{path!r}: a path inside the sandbox must be absolute")
    query = [("path", path)]
    if mode is not None:
        query.append(("mode", f"{mode:04o}"))
    return query


def token_request(scopes: Sequence[str], seconds: int | None) -> dict[str, Any]:
    """The SandboxToken a visitor token is asked for with."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}, not {list(scopes)}")
    spec: dict[str, Any] = {"scopes": list(scopes)}
    if seconds is not None:
        spec["expirationSeconds"] = seconds
    return {"apiVersion": SUBRESOURCES, "kind": "SandboxToken", "spec": spec}


@dataclass(frozen=True, slots=True)
class VisitorToken:
    """A visitor token, as the gateway minted it: for one Sandbox (by UID), its scopes."""

    token: str
    expires_at: datetime
    namespace: str
    name: str
    uid: str
    scopes: tuple[str, ...]


def token_of(answer: Mapping[str, Any]) -> VisitorToken:
    """The VisitorToken of the gateway's answer to a token request."""
    metadata, status = answer.get("metadata") or {}, answer.get("status") or {}
    expires = str(status["expirationTimestamp"]).replace("Z", "+00:00")
    return VisitorToken(
        token=str(status["token"]),
        expires_at=datetime.fromisoformat(expires),
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        scopes=tuple((answer.get("spec") or {}).get("scopes") or ()),
    )


@dataclass(frozen=True, slots=True)
class ExecResult:
    """How a command ended and everything it wrote."""

    exit_code: int
    stdout: bytes
    stderr: bytes
