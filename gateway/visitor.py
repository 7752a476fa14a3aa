"""The public visitor endpoint: browsers (and other clients) holding a visitor token.

    wss://<gateway>/v1/namespaces/{ns}/sandboxes/{name}/terminal?session=..
    https://<gateway>/v1/namespaces/{ns}/sandboxes/{name}/terminal?session=..  (DELETE: end it)
    wss://<gateway>/v1/namespaces/{ns}/sandboxes/{name}/exec?command=..&stdin=..
    https://<gateway>/v1/namespaces/{ns}/sandboxes/{name}/files?path=..   (GET, PUT, DELETE)

The token travels in the WebSocket subprotocol list, as Kubernetes itself takes bearer tokens
from browsers: `base64url.bearer.authorization.k8s.io.<base64url(token)>` next to
`v5.channel.k8s.io` (a browser's WebSocket cannot send an Authorization header), or as
`Authorization: Bearer <token>` (files, and clients that can). Never in the URL: URLs end up
in logs and browser histories.

The checks, each answered before any upgrade with a JSON `Status`: the Origin against the
configured list (403; no Origin at all only when configured, for clients that are not
browsers); the token (401: missing, malformed, forged, of an unknown key, expired); the
token's Sandbox and scope against the request (403: another Sandbox, a namesake made after it
by UID, a scope it lacks). Files answers carry CORS headers for the listed origins.
"""

from __future__ import annotations

import base64
import binascii
import logging

from aiohttp import web

from tuxio.common.metrics import request_timer

from .api import error_middleware, health_routes
from .errors import Forbidden, GatewayError, Unauthorized
from .metrics import VISITOR_REQUEST_SECONDS
from .runtime import Gateway
from .settings import GatewaySettings
from .streams import (
    StreamKind,
    close_streams,
    end_session,
    exec_query,
    files_query,
    forward_files,
    offered_subprotocols,
    serve_stream,
    session_query,
)
from .tokens import VisitorClaims

__all__ = ["BEARER_PROTOCOL", "check_origin", "create_visitor_app", "visitor_token"]

log = logging.getLogger(__name__)

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
BEARER_PROTOCOL = "base64url.bearer.authorization.k8s.io."
SANDBOX = "/v1/namespaces/{namespace}/sandboxes/{name}"


def check_origin(settings: GatewaySettings, origin: str | None) -> None:
    """Forbidden unless `origin` is listed (or absent, where that is allowed)."""
    if origin is None:
        if not settings.visitor_allow_missing_origin:
            raise Forbidden("an Origin header is required")
        return
    if origin.rstrip("/") not in settings.visitor_allowed_origins:
        raise Forbidden(f"origin {origin!r} is not allowed")


def visitor_token(protocol_headers: list[str], authorization: str | None) -> str:
    """The token from the subprotocol list, else from `Authorization: Bearer`."""
    for header in protocol_headers:
        for offered in header.split(","):
            offered = offered.strip()
            if offered.startswith(BEARER_PROTOCOL):
                encoded = offered[len(BEARER_PROTOCOL) :]
                try:
                    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
                except (binascii.Error, UnicodeDecodeError):
                    raise Unauthorized("the bearer subprotocol is not base64url") from None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    raise Unauthorized(
        f"no visitor token: send it as the subprotocol {BEARER_PROTOCOL}<base64url(token)> "
        "or as Authorization: Bearer"
    )


async def _admit(request: web.Request, scope: str) -> tuple[Gateway, VisitorClaims]:
    gateway = request.app[GATEWAY]
    check_origin(gateway.settings, request.headers.get("Origin"))
    token = visitor_token(
        request.headers.getall("Sec-WebSocket-Protocol", []),
        request.headers.get("Authorization"),
    )
    gateway.require_ready()
    claims = await gateway.keys.verify(token, issuer=gateway.settings.token_issuer)
    claims.require_scope(request.match_info["namespace"], request.match_info["name"], scope)
    return gateway, claims


async def _stream(request: web.Request, kind: StreamKind) -> web.StreamResponse:
    gateway, claims = await _admit(request, kind)
    query = exec_query(kind, request.query)
    protocols = offered_subprotocols(request.headers.getall("Sec-WebSocket-Protocol", []))
    sandbox = await gateway.sandboxes.route(claims.namespace, claims.name)
    claims.require_uid(sandbox.uid)
    target = await gateway.sandboxes.target(sandbox)
    return await serve_stream(
        request,
        gateway.agents,
        target,
        query,
        protocols,
        max_message_bytes=gateway.settings.max_message_bytes,
        open_streams=gateway.open_streams,
        who=f"visitor token {claims.token_id}",
    )


async def exec_stream(request: web.Request) -> web.StreamResponse:
    return await _stream(request, "exec")


async def terminal_stream(request: web.Request) -> web.StreamResponse:
    return await _stream(request, "terminal")


async def end_terminal(request: web.Request) -> web.StreamResponse:
    """End a terminal session (`DELETE .../terminal?session=<id>`, scope terminal)."""
    gateway, claims = await _admit(request, "terminal")
    session = session_query(request.query)
    sandbox = await gateway.sandboxes.route(claims.namespace, claims.name)
    claims.require_uid(sandbox.uid)
    target = await gateway.sandboxes.target(sandbox)
    return await end_session(gateway.agents, target, session, _cors(request))


def _cors(request: web.Request) -> dict[str, str]:
    """CORS headers for a listed Origin (none for others: the browser then hides the answer)."""
    origin = request.headers.get("Origin")
    allowed = request.app[GATEWAY].settings.visitor_allowed_origins
    if not origin or origin.rstrip("/") not in allowed:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "X-File-Mode, Content-Length",
        "Vary": "Origin",
    }


async def files(request: web.Request) -> web.StreamResponse:
    if request.method == "OPTIONS":  # a browser's CORS preflight: no token comes with it
        check_origin(request.app[GATEWAY].settings, request.headers.get("Origin"))
        preflight = web.Response(status=204, headers=_cors(request))
        preflight.headers["Access-Control-Allow-Methods"] = "GET, PUT, DELETE"
        preflight.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        preflight.headers["Access-Control-Max-Age"] = "600"
        return preflight
    try:
        if request.method not in ("GET", "HEAD", "PUT", "DELETE"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT", "DELETE", "OPTIONS"])
        gateway, claims = await _admit(request, "files")
        query = files_query(request.query)
        sandbox = await gateway.sandboxes.route(claims.namespace, claims.name)
        claims.require_uid(sandbox.uid)
        target = await gateway.sandboxes.target(sandbox)
        return await forward_files(request, gateway.agents, target, query, _cors(request))
    except GatewayError as exc:
        # With the CORS headers, so that a page can read why.
        return web.json_response(exc.body(), status=exc.code, headers=_cors(request))


def create_visitor_app(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[request_timer(VISITOR_REQUEST_SECONDS), error_middleware])
    app[GATEWAY] = gateway
    app.on_shutdown.append(lambda _: close_streams(gateway.open_streams))
    app.add_routes(
        [
            *health_routes(gateway),
            web.get(f"{SANDBOX}/exec", exec_stream),
            web.get(f"{SANDBOX}/terminal", terminal_stream),
            web.delete(f"{SANDBOX}/terminal", end_terminal),
            web.route("*", f"{SANDBOX}/files", files),
        ]
    )
    return app
