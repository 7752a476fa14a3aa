"""Routes of files inside a running container (nodeagent/files.py does the work).

No `from __future__ import annotations` here: FastAPI reads these annotations at run time.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from .deps import ContainerName, Files, Service
from .errors import InvalidPath
from .files import RegularFile, parse_mode
from .models import DirectoryListing, FileDeleted, FileWritten

__all__ = ["files_router"]

files_router = APIRouter(tags=["files"])

FilePath = Annotated[
    str,
    Query(
        description="Absolute, normalised path inside the container (no '..', no '//').",
        max_length=4096,
    ),
]

_READ_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A regular file's bytes (header X-File-Mode), or a directory's listing.",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/DirectoryListing"}},
        },
    }
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@files_router.get(
    "/containers/{name}/files",
    responses=_READ_ANSWER,
    response_model=DirectoryListing,
)
async def read_file(
    name: ContainerName, path: FilePath, service: Service, files: Files
) -> StreamingResponse | DirectoryListing:
    """A regular file's bytes, or a directory's entries (symbolic links resolved inside the
    container's root; devices, FIFOs and sockets refused)."""
    found = files.read(await service.running_init(name), path)
    if isinstance(found, RegularFile):
        return StreamingResponse(
            files.read_chunks(found),
            media_type="application/octet-stream",
            headers={"X-File-Mode": found.mode, "Content-Length": str(found.size)},
        )
    return found


@files_router.put("/containers/{name}/files", openapi_extra=_BODY)
async def write_file(
    name: ContainerName,
    path: FilePath,
    request: Request,
    service: Service,
    files: Files,
    mode: Annotated[str, Query(description="Permission bits in octal.")] = "0644",
    # The body's length as the client's HTTP library sends it: no parameter of the route's
    # (documented, a client could set it apart from the body, which the server refuses).
    content_length: Annotated[int | None, Header(ge=0, include_in_schema=False)] = None,
) -> FileWritten:
    """Write the body to the file atomically, owned by the container's root; its directory must
    exist. A symbolic link at the path is replaced, not followed."""
    bits = parse_mode(mode)
    if bits > 0o7777:
        raise InvalidPath(f"mode {mode} has bits beyond 07777")
    init = await service.running_init(name)
    return await files.write(init, path, bits, request.stream(), content_length)


@files_router.delete("/containers/{name}/files")
async def delete_file(
    name: ContainerName, path: FilePath, service: Service, files: Files
) -> FileDeleted:
    """Remove a file or a symbolic link (never a directory)."""
    return files.delete(await service.running_init(name), path)
