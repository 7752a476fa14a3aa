"""OpenAPI 3 documents of the gateway's two HTTP listeners: the aggregated API (what
kube-apiserver proxies to) and the public visitor endpoint.

Written by hand from the routes of `api.create_api_app` and `visitor.create_visitor_app`;
tests/unit/test_gateway_openapi.py holds them to those routes, and the fuzz suites
(tests/e2e/test_gateway_fuzz.py, `make fuzz`) to what the gateway answers. docs/ carries the
rendered copies (`make openapi`). OpenAPI has no WebSocket: a stream's route is documented as
the GET of its upgrade, marked `x-websocket`, with its query and the 101 that accepts it.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from tuxio.common.remotecommand import SESSION_ID_PATTERN, exec_query_parameters
from tuxio.nodeagent.models import DirectoryListing, FileDeleted, FileWritten, SessionInfo

from .models import GROUP, VERSION

__all__ = ["api_document", "visitor_document"]

_STATUS_REF = {"$ref": "#/components/schemas/Status"}

_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A metav1.Status of failure, as the Kubernetes API server answers errors.",
    "required": ["kind", "apiVersion", "status", "message", "reason", "code"],
    "properties": {
        "kind": {"type": "string", "enum": ["Status"]},
        "apiVersion": {"type": "string", "enum": ["v1"]},
        "metadata": {"type": "object"},
        "status": {"type": "string", "enum": ["Failure"]},
        "message": {"type": "string", "description": "What went wrong, for a person."},
        "reason": {"type": "string", "description": "A CamelCase word for a program."},
        "code": {"type": "integer", "description": "The HTTP status, again."},
    },
}


def _schemas() -> dict[str, Any]:
    """Status, and the agent's answers that the gateway passes on as they are (a listing, a
    file written or removed, a session ended), from the agent's own models."""
    models = (DirectoryListing, FileWritten, FileDeleted, SessionInfo)
    _, top = models_json_schema(
        [(model, "serialization") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    return {"Status": _STATUS_SCHEMA, **top["$defs"]}


# Statuses every failure of a sandbox's request may have: the gateway's own (400 a bad query,
# 401 no verified caller, 403 not allowed, 404 no such Sandbox, 409 not running) and the
# agent's refusals, passed on as they are (404 no such file, 409 a read-only place, 413 too
# large, 429 too many sessions).
_SANDBOX_FAILURES = (400, 401, 403, 404, 409, 413, 429)
_DESCRIPTIONS = {
    101: "Switching Protocols: the stream is open (remote-command frames).",
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "A malformed request: a query parameter, a subprotocol, a path.",
    401: "Who is asking is not established.",
    403: "Known, and not allowed.",
    404: "No such Sandbox, file or session.",
    405: "Not a method of this route.",
    409: "The Sandbox is not running, or the agent refuses for the container's state.",
    413: "The file is larger than the agent takes.",
    422: "The request's body does not validate.",
    429: "The sandbox has as many sessions as it may.",
    503: "The gateway is starting: its caches or keys are not loaded yet.",
}


def _failures(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": _STATUS_REF}},
        }
        for code in codes
    }


def _json(code: int, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        str(code): {
            "description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": schema}},
        }
    }


def _path_parameters() -> list[dict[str, Any]]:
    # As long as Kubernetes lets them be: a namespace is a DNS label, a name a DNS subdomain.
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": what,
            "schema": {"type": "string", "minLength": 1, "maxLength": longest},
        }
        for name, what, longest in (
            ("namespace", "The Sandbox's namespace.", 63),
            ("name", "The Sandbox.", 253),
        )
    ]


def _health() -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    alive = {
        "get": {
            "summary": "Liveness: answers anyone, without a certificate or token.",
            "tags": ["health"],
            "security": [],
            "responses": {"200": {"description": "ok", "content": text}},
        }
    }
    ready = {
        "get": {
            "summary": "Readiness: ok once the watches, the front proxy's CA and the keys are "
            "loaded.",
            "tags": ["health"],
            "security": [],
            "responses": {
                "200": {"description": "ok", "content": text},
                "503": {"description": "What is not loaded yet.", "content": text},
            },
        }
    }
    return {"/healthz": alive, "/livez": alive, "/readyz": ready}


def _upgrade_headers() -> list[dict[str, Any]]:
    return [
        {
            "name": "Sec-WebSocket-Protocol",
            "in": "header",
            "required": False,
            "description": "v5.channel.k8s.io and/or v4.channel.k8s.io (a visitor may add "
            "base64url.bearer.authorization.k8s.io.<base64url(token)>).",
            "schema": {"type": "string"},
        }
    ]


def _stream(kind: str, failures: tuple[int, ...]) -> dict[str, Any]:
    terminal = kind == "terminal"
    query = exec_query_parameters(terminal=terminal)
    if not terminal:
        query.append(
            {
                "name": "container",
                "in": "query",
                "required": False,
                "description": "Ignored (what kubectl exec sends): a sandbox has one container.",
                "schema": {"type": "string"},
            }
        )
    return {
        "summary": f"Open {'a terminal (a PTY, resumable by session)' if terminal else 'an exec'} "
        "as a WebSocket upgrade; a plain GET is refused with 400.",
        "tags": ["streams"],
        "x-websocket": True,
        "parameters": [*query, *_upgrade_headers()],
        "responses": {
            "101": {"description": _DESCRIPTIONS[101]},
            **_failures(*failures),
        },
    }


def _session_query() -> list[dict[str, Any]]:
    return [
        {
            "name": "session",
            "in": "query",
            "required": True,
            "description": "The terminal session to end.",
            "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
        }
    ]


def _files_query(*, write: bool = False) -> list[dict[str, Any]]:
    found = [
        {
            "name": "path",
            "in": "query",
            "required": True,
            "description": "An absolute, normalised path inside the sandbox.",
            "schema": {"type": "string", "minLength": 1},
        }
    ]
    if write:
        found.append(
            {
                "name": "mode",
                "in": "query",
                "required": False,
                "description": "Permission bits in octal (0644 unless given).",
                "schema": {"type": "string"},
            }
        )
    return found


def _files(failures: tuple[int, ...], *, options: bool) -> dict[str, Any]:
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    read = {
        "200": {
            "description": "A regular file's bytes (header X-File-Mode), or a directory's listing.",
            "content": {
                **octets,
                "application/json": {"schema": {"$ref": "#/components/schemas/DirectoryListing"}},
            },
        }
    }
    found: dict[str, Any] = {
        "get": {
            "summary": "A file's bytes or a directory's listing.",
            "tags": ["files"],
            "parameters": _files_query(),
            "responses": {**read, **_failures(*failures)},
        },
        "put": {
            "summary": "Write the body to the file, atomically.",
            "tags": ["files"],
            "parameters": _files_query(write=True),
            "requestBody": {"required": True, "content": octets},
            "responses": {
                **_json(200, {"$ref": "#/components/schemas/FileWritten"}),
                **_failures(*failures),
            },
        },
        "delete": {
            "summary": "Remove a file or a symbolic link (never a directory).",
            "tags": ["files"],
            "parameters": _files_query(),
            "responses": {
                **_json(200, {"$ref": "#/components/schemas/FileDeleted"}),
                **_failures(*failures),
            },
        },
    }
    if options:
        found["options"] = {
            "summary": "A browser's CORS preflight: no token comes with it; the Origin must be "
            "listed.",
            "tags": ["files"],
            "security": [],
            "responses": {"204": {"description": _DESCRIPTIONS[204]}, **_failures(403)},
        }
    return found


def _end_terminal(failures: tuple[int, ...]) -> dict[str, Any]:
    return {
        "summary": "End a terminal session: the agent hangs it up; its last state.",
        "tags": ["streams"],
        "parameters": _session_query(),
        "responses": {
            **_json(200, {"$ref": "#/components/schemas/SessionInfo"}),
            **_failures(*failures),
        },
    }


def _document(title: str, description: str, security: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": VERSION, "description": description},
        "components": {"schemas": _schemas(), "securitySchemes": security},
        "security": [{name: []} for name in security],
    }


def _token() -> dict[str, Any]:
    scopes = {"type": "string", "enum": ["terminal", "exec", "files"]}
    request = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"type": "string", "enum": [f"{GROUP}/{VERSION}"]},
            "kind": {"type": "string", "enum": ["SandboxToken"]},
            "metadata": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "scopes": {"type": "array", "items": scopes, "minItems": 1, "maxItems": 3},
                    "expirationSeconds": {
                        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]
                    },
                },
            },
        },
    }
    minted = {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec", "status"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string", "enum": ["SandboxToken"]},
            "metadata": {"type": "object"},
            "spec": {"type": "object"},
            "status": {
                "type": "object",
                "required": ["token", "expirationTimestamp"],
                "properties": {
                    "token": {"type": "string"},
                    "expirationTimestamp": {"type": "string"},
                },
            },
        },
    }
    return {
        "summary": "Mint a visitor token for this Sandbox (an empty body: the defaults).",
        "tags": ["token"],
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": request}},
        },
        "responses": {**_json(201, minted), **_failures(400, 401, 403, 404, 422)},
    }


def api_document() -> dict[str, Any]:
    """The aggregated API server's routes (what `api.create_api_app` serves)."""
    sandbox = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/sandboxes/{{name}}"
    any_object = {"type": "object"}
    discovery = {
        path: {
            "get": {
                "summary": summary,
                "tags": ["discovery"],
                "responses": {**_json(200, any_object), **_failures(401)},
            }
        }
        for path, summary in (
            ("/apis", "The APIGroupList of this server."),
            (f"/apis/{GROUP}", "The APIGroup."),
            (f"/apis/{GROUP}/{VERSION}", "The APIResourceList: the four subresources."),
            ("/openapi/v2", "An empty Swagger document (subresources carry none)."),
            ("/openapi/v3", "An empty OpenAPI v3 index."),
        )
    }
    params = {"parameters": _path_parameters()}
    failures = (*_SANDBOX_FAILURES, 503)
    document = _document(
        "tuxio gateway: the aggregated API",
        "subresources.tux.io/v1alpha1, proxied by kube-apiserver with its front-proxy client "
        "certificate and the caller in X-Remote-User / X-Remote-Group / X-Remote-Extra-*. "
        "Errors are metav1.Status objects.",
        {
            "frontProxy": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Remote-User",
                "description": "The caller as the API server names it, believed only on a "
                "connection that presented the front-proxy client certificate (verified in the "
                "handshake against the request-header CA, its common name an allowed one).",
            }
        },
    )
    document["paths"] = {
        **_health(),
        **discovery,
        f"{sandbox}/exec": {**params, "get": _stream("exec", failures)},
        f"{sandbox}/terminal": {
            **params,
            "get": _stream("terminal", failures),
            "delete": _end_terminal(failures),
        },
        f"{sandbox}/files": {**params, **_files(failures, options=False)},
        f"{sandbox}/token": {**params, "post": _token()},
    }
    return document


def visitor_document() -> dict[str, Any]:
    """The public visitor endpoint's routes (what `visitor.create_visitor_app` serves)."""
    sandbox = "/v1/namespaces/{namespace}/sandboxes/{name}"
    params = {"parameters": _path_parameters()}
    failures = (*_SANDBOX_FAILURES, 503)
    document = _document(
        "tuxio gateway: the visitor endpoint",
        "Browsers and other clients holding a visitor token: in the WebSocket subprotocol "
        "list (base64url.bearer.authorization.k8s.io.<base64url(token)>) or as "
        "Authorization: Bearer. The Origin is checked first (403 unless listed). Errors are "
        "metav1.Status objects.",
        {"visitorToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    )
    document["paths"] = {
        **_health(),
        f"{sandbox}/exec": {**params, "get": _stream("exec", failures)},
        f"{sandbox}/terminal": {
            **params,
            "get": _stream("terminal", failures),
            "delete": _end_terminal(failures),
        },
        f"{sandbox}/files": {**params, **_files(failures, options=True)},
    }
    return document
