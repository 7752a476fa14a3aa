"""Files inside a sandbox, through the gateway's `sandboxes/files` subresource: read, write,
list and remove, as the sandbox's root, paths resolved inside its root filesystem."""

from __future__ import annotations

import json
from typing import Any

from .api import files_query
from .errors import SandboxInvalid
from .transport import Transport

__all__ = ["AsyncFiles"]

_TIMEOUT = 120.0


class AsyncFiles:
    """The files of one sandbox."""

    def __init__(self, transport: Transport, path: str) -> None:
        self._transport = transport
        self._path = path  # .../sandboxes/{name}/files

    async def read(self, path: str) -> bytes:
        """A regular file's bytes (IsADirectory, as SandboxInvalid, for a directory)."""
        response = await self._transport.request(
            "GET", self._path, query=files_query(path), timeout=_TIMEOUT
        )
        async with response:
            body = await response.read()
            if response.content_type == "application/json":
                listing = json.loads(body)
                if isinstance(listing, dict) and "items" in listing:
                    raise SandboxInvalid(
                        f"{path} is a directory", status=400, reason="IsADirectory"
                    )
        return body

    async def list(self, path: str) -> list[dict[str, Any]]:
        """A directory's entries: `name`, `type` (file, directory, symlink, other), `size`,
        `mode`, `modifiedAt`. SandboxInvalid (NotADirectory) for anything else."""
        response = await self._transport.request(
            "GET", self._path, query=files_query(path), timeout=_TIMEOUT
        )
        async with response:
            if response.content_type != "application/json":
                raise SandboxInvalid(
                    f"{path} is not a directory", status=400, reason="NotADirectory"
                )
            listing: dict[str, Any] = await response.json()
        return list(listing.get("items") or [])

    async def write(self, path: str, data: bytes | str, mode: int = 0o644) -> dict[str, Any]:
        """Make `path` hold `data` (atomically; its directory must exist): `{path, size, mode}`."""
        raw = data.encode() if isinstance(data, str) else data
        return await self._transport.json(
            "PUT",
            self._path,
            query=files_query(path, mode),
            data=raw,
            content_type="application/octet-stream",
        )

    async def remove(self, path: str) -> None:
        """Remove a file or a symbolic link (never a directory)."""
        response = await self._transport.request("DELETE", self._path, query=files_query(path))
        response.release()
