"""The aggregated API's types: the discovery documents of subresources.tux.io/v1alpha1 and the
SandboxToken a visitor token is asked for with (`POST .../sandboxes/{name}/token`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .tokens import SCOPES

__all__ = [
    "API_VERSION",
    "GROUP",
    "SUBRESOURCES",
    "VERSION",
    "SandboxTokenRequest",
    "SandboxTokenSpec",
    "api_group",
    "api_group_list",
    "api_resource_list",
]

GROUP = "subresources.tux.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Each subresource of sandboxes, its kind and the HTTP verbs it is reached with, as the API
# server names them (GET is `get`, also for a WebSocket upgrade; POST `create`; PUT `update`).
# The gateway itself authorises `create` on every one of them.
SUBRESOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "exec": ("SandboxExecOptions", ("get",)),
    "terminal": ("SandboxTerminalOptions", ("get", "delete")),
    "files": ("SandboxFile", ("get", "update", "delete")),
    "token": ("SandboxToken", ("create",)),
}


def _version() -> dict[str, str]:
    return {"groupVersion": API_VERSION, "version": VERSION}


def api_group() -> dict[str, Any]:
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [_version()],
        "preferredVersion": _version(),
    }


def api_group_list() -> dict[str, Any]:
    group = api_group()
    del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}


def api_resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [
            {
                "name": f"sandboxes/{sub}",
                "singularName": "",
                "namespaced": True,
                "kind": kind,
                "verbs": list(verbs),
            }
            for sub, (kind, verbs) in SUBRESOURCES.items()
        ],
    }


class _Camel(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


Scope = Literal["terminal", "exec", "files"]


def _terminal_only() -> list[Scope]:
    return ["terminal"]


class SandboxTokenSpec(_Camel):
    """What a visitor token should grant."""

    scopes: list[Scope] = Field(
        default_factory=_terminal_only,
        min_length=1,
        max_length=len(SCOPES),
        description="What the token may open: terminal, exec, files.",
    )
    expiration_seconds: int | None = Field(
        None, ge=1, description="Lifetime; default and maximum are the gateway's settings."
    )


class SandboxTokenRequest(_Camel):
    """The body of `POST .../sandboxes/{name}/token`."""

    api_version: Literal["subresources.tux.io/v1alpha1"] = "subresources.tux.io/v1alpha1"
    kind: Literal["SandboxToken"] = "SandboxToken"
    metadata: dict[str, Any] | None = Field(None, description="Ignored: the path names it.")
    spec: SandboxTokenSpec = Field(default_factory=SandboxTokenSpec)
