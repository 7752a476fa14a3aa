"""The aggregated API server of subresources.tux.io/v1alpha1: what kube-apiserver proxies to.

Every request but the health checks passes the front-proxy check first (`frontproxy`): no
verified client certificate of the API server's front proxy, no entry, whatever the headers
say. Then the discovery documents, or a subresource of a Sandbox, for which the gateway asks a
SubjectAccessReview of verb `create` on `sandboxes/<subresource>` for the user the API server
named (the API server has authorised the request's own verb already; RBAC's `create` decides
here, as KubeVirt's virt-api asks for its subresources):

    GET       /apis/subresources.tux.io/v1alpha1/namespaces/{ns}/sandboxes/{name}/exec
    GET       .../sandboxes/{name}/terminal       (DELETE ...?session=<id> ends a session)
    GET|PUT|DELETE .../sandboxes/{name}/files
    POST      .../sandboxes/{name}/token

Errors are `metav1.Status` objects, as kubectl expects from any API.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from tuxio.common.metrics import request_timer

from .errors import BadRequest, Forbidden, GatewayError, Invalid
from .frontproxy import UserInfo
from .kube import KubeError
from .metrics import API_REQUEST_SECONDS
from .models import (
    API_VERSION,
    GROUP,
    VERSION,
    SandboxTokenRequest,
    api_group,
    api_group_list,
    api_resource_list,
)
from .runtime import Gateway
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
from .tokens import mint

__all__ = ["HEALTH_PATHS", "create_api_app", "error_middleware", "health_routes"]

log = logging.getLogger(__name__)

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
USER: web.RequestKey[UserInfo] = web.RequestKey("user", UserInfo)
HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
SANDBOX = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/sandboxes/{{name}}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as `metav1.Status` JSON: the gateway's own, and aiohttp's (404, 405). A refused
    WebSocket handshake also closes the connection, as a client that asked for an upgrade
    expects (it waits for the close, not for a next request)."""
    try:
        return await handler(request)
    except GatewayError as exc:
        refusal = _json(exc.code, exc.body())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status, "BadRequest")
        refusal = _json(
            exc.status,
            GatewayError(f"{request.method} {request.path}: {exc.reason}").body()
            | {"reason": reason, "code": exc.status},
        )
    if request.headers.get("Upgrade", "").lower() == "websocket":
        refusal.force_close()
    return refusal


@web.middleware
async def front_proxy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is asking, as the API server's front proxy tells; nothing else gets in."""
    if request.path in HEALTH_PATHS:
        return await handler(request)
    gateway = request.app[GATEWAY]
    peercert = request.transport.get_extra_info("peercert") if request.transport else None
    request[USER] = gateway.front_proxy.authenticate(peercert, request.headers.items())
    return await handler(request)


def health_routes(gateway: Gateway) -> list[web.RouteDef]:
    async def alive(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def ready(_: web.Request) -> web.Response:
        missing = gateway.not_ready()
        if missing:
            return web.Response(status=503, text="not ready: " + "; ".join(missing))
        return web.Response(text="ok")

    return [web.get("/healthz", alive), web.get("/livez", alive), web.get("/readyz", ready)]


async def authorize(gateway: Gateway, user: UserInfo, ns: str, name: str, sub: str) -> None:
    """Forbidden unless RBAC lets `user` create `sandboxes/<sub>` of this Sandbox."""
    attributes = {
        "namespace": ns,
        "verb": "create",
        "group": GROUP,
        "version": VERSION,
        "resource": "sandboxes",
        "subresource": sub,
        "name": name,
    }
    try:
        allowed, reason = await gateway.kube.subject_access_review(user, attributes)
    except KubeError as exc:
        log.error("SubjectAccessReview failed: %s", exc)
        raise Forbidden("the authorisation check could not be made; try again") from None
    if not allowed:
        raise Forbidden(
            f'sandboxes.{GROUP} "{name}" is forbidden: User "{user.name}" cannot create '
            f'resource "sandboxes/{sub}" in API group "{GROUP}" in the namespace "{ns}"'
            + (f": {reason}" if reason else "")
        )


async def _stream(request: web.Request, kind: StreamKind) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    ns, name = request.match_info["namespace"], request.match_info["name"]
    user: UserInfo = request[USER]
    await authorize(gateway, user, ns, name, kind)
    query = exec_query(kind, request.query)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise BadRequest(f"sandboxes/{kind} is a WebSocket: send an Upgrade request")
    protocols = offered_subprotocols(request.headers.getall("Sec-WebSocket-Protocol", []))
    gateway.require_ready()
    target = await gateway.sandboxes.target(await gateway.sandboxes.route(ns, name))
    return await serve_stream(
        request,
        gateway.agents,
        target,
        query,
        protocols,
        max_message_bytes=gateway.settings.max_message_bytes,
        open_streams=gateway.open_streams,
        who=f"user {user.name}",
    )


async def exec_stream(request: web.Request) -> web.StreamResponse:
    return await _stream(request, "exec")


async def terminal_stream(request: web.Request) -> web.StreamResponse:
    return await _stream(request, "terminal")


async def end_terminal(request: web.Request) -> web.StreamResponse:
    """End a terminal session (`DELETE .../terminal?session=<id>`): the agent hangs it up."""
    gateway = request.app[GATEWAY]
    ns, name = request.match_info["namespace"], request.match_info["name"]
    await authorize(gateway, request[USER], ns, name, "terminal")
    session = session_query(request.query)
    gateway.require_ready()
    target = await gateway.sandboxes.target(await gateway.sandboxes.route(ns, name))
    return await end_session(gateway.agents, target, session, None)


async def files(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    ns, name = request.match_info["namespace"], request.match_info["name"]
    await authorize(gateway, request[USER], ns, name, "files")
    query = files_query(request.query)
    gateway.require_ready()
    target = await gateway.sandboxes.target(await gateway.sandboxes.route(ns, name))
    return await forward_files(request, gateway.agents, target, query)


async def token(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    settings = gateway.settings
    ns, name = request.match_info["namespace"], request.match_info["name"]
    user: UserInfo = request[USER]
    await authorize(gateway, user, ns, name, "token")
    asked = await _token_request(request)
    # A token opens what it names: whoever mints one must be allowed to open that themselves.
    for scope in sorted(set(asked.spec.scopes)):
        await authorize(gateway, user, ns, name, scope)
    seconds = asked.spec.expiration_seconds or settings.token_default_seconds
    if seconds > settings.token_max_seconds:
        raise Invalid(
            f"spec.expirationSeconds: {seconds} is more than the gateway's maximum, "
            f"{settings.token_max_seconds}"
        )
    gateway.require_ready()
    sandbox = await gateway.sandboxes.route(ns, name, fresh=True)
    assert gateway.keys.ring is not None
    minted, expires = mint(
        gateway.keys.ring,
        issuer=settings.token_issuer,
        namespace=ns,
        name=name,
        uid=sandbox.uid,
        scopes=asked.spec.scopes,
        lifetime=timedelta(seconds=seconds),
        now=datetime.now(UTC),
    )
    log.info(
        "visitor token for %s/%s (uid %s, %s) minted by user %s, expires %s",
        ns,
        name,
        sandbox.uid,
        ",".join(sorted(set(asked.spec.scopes))),
        user.name,
        expires.isoformat(),
    )
    return _json(
        201,
        {
            "apiVersion": API_VERSION,
            "kind": "SandboxToken",
            "metadata": {"name": name, "namespace": ns, "uid": sandbox.uid},
            "spec": {"scopes": sorted(set(asked.spec.scopes)), "expirationSeconds": seconds},
            "status": {
                "token": minted,
                "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        },
    )


async def _token_request(request: web.Request) -> SandboxTokenRequest:
    raw = await request.read()
    try:
        return (
            SandboxTokenRequest.model_validate_json(raw) if raw.strip() else SandboxTokenRequest()
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()
        )
        raise Invalid(f"SandboxToken is invalid: {problems}") from None


def create_api_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        middlewares=[request_timer(API_REQUEST_SECONDS), error_middleware, front_proxy_middleware]
    )
    app[GATEWAY] = gateway
    app.on_shutdown.append(lambda _: close_streams(gateway.open_streams))

    async def group_list(_: web.Request) -> web.Response:
        return _json(200, api_group_list())

    async def group(_: web.Request) -> web.Response:
        return _json(200, api_group())

    async def resources(_: web.Request) -> web.Response:
        return _json(200, api_resource_list())

    async def openapi_v2(_: web.Request) -> web.Response:
        # The API server merges every aggregated server's OpenAPI; subresources carry none.
        info = {"title": "tuxio gateway", "version": VERSION}
        return _json(200, {"swagger": "2.0", "info": info, "paths": {}})

    async def openapi_v3(_: web.Request) -> web.Response:
        return _json(200, {"paths": {}})

    app.add_routes(
        [
            *health_routes(gateway),
            web.get("/apis", group_list),
            web.get(f"/apis/{GROUP}", group),
            web.get(f"/apis/{GROUP}/{VERSION}", resources),
            web.get("/openapi/v2", openapi_v2),
            web.get("/openapi/v3", openapi_v3),
            web.get(f"{SANDBOX}/exec", exec_stream),
            web.get(f"{SANDBOX}/terminal", terminal_stream),
            web.delete(f"{SANDBOX}/terminal", end_terminal),
            web.get(f"{SANDBOX}/files", files),
            web.put(f"{SANDBOX}/files", files),
            web.delete(f"{SANDBOX}/files", files),
            web.post(f"{SANDBOX}/token", token),
        ]
    )
    return app
