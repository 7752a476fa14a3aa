"""The site's routes: the page, its static files, the visit (a sandbox and a token for it),
the tab's presence socket, and health.

    GET  /                  the terminal page (sets the signed session cookie)
    POST /api/visit         {"state": "ready", gateway, namespace, name, session, token} or
                            {"state": "queued"|"limited"|"full"|"retry", retryAfter, ...}
    GET  /api/presence      WebSocket held open by each tab: the last one closed starts the
                            grace period of the session's sandbox
    GET  /healthz, /readyz
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from .admission import Full, Queued
from .capacity import site_cap
from .clientip import client_address
from .cookies import SessionSigner
from .settings import WebSettings
from .visits import Admitted, Failed, Limited, Visits

__all__ = ["COOKIE", "create_app"]

log = logging.getLogger("tuxio.web")

STATIC = Path(__file__).with_name("static")
COOKIE = "tuxio_session"
SETTINGS: web.AppKey[WebSettings] = web.AppKey("settings", WebSettings)
VISITS: web.AppKey[Visits] = web.AppKey("visits", Visits)
SIGNER: web.AppKey[SessionSigner] = web.AppKey("signer", SessionSigner)


def _session(request: web.Request) -> str | None:
    return request.app[SIGNER].verify(request.cookies.get(COOKIE))


def _address(request: web.Request) -> str:
    settings = request.app[SETTINGS]
    return client_address(
        request.remote, request.headers.get("X-Forwarded-For"), settings.trusted_proxies
    )


def _gateway_origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def page(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    response = web.FileResponse(STATIC / "index.html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"connect-src 'self' {_gateway_origin(settings.gateway_url)}; frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    if _session(request) is None:
        _, value = request.app[SIGNER].new()
        response.set_cookie(
            COOKIE,
            value,
            httponly=True,
            samesite="Strict",
            secure=settings.secure_cookie,
            max_age=settings.ttl_seconds,
        )
    return response


def _turned_away(state: str, retry_after: float, message: str, **extra: Any) -> web.Response:
    body = {"state": state, "retryAfter": round(retry_after, 1), "message": message, **extra}
    return web.json_response(
        body, status=200, headers={"Retry-After": str(max(1, round(retry_after)))}
    )


async def visit(request: web.Request) -> web.Response:
    session = _session(request)
    if session is None:
        return web.json_response(
            {"reason": "NoSession", "message": "no session cookie: load the page first"},
            status=400,
        )
    settings = request.app[SETTINGS]
    outcome = await request.app[VISITS].enter(
        session, _address(request), new_terminal=request.query.get("fresh") == "1"
    )
    if isinstance(outcome, Admitted):
        return web.json_response(
            {
                "state": "ready",
                "gateway": settings.gateway_url,
                "namespace": outcome.namespace,
                "name": outcome.name,
                "session": outcome.terminal,
                "token": outcome.token,
                "resumed": outcome.resumed,
            },
            headers={"Cache-Control": "no-store"},
        )
    if isinstance(outcome, Queued):
        return _turned_away(
            "queued",
            outcome.retry_after,
            f"Every shell is taken right now. You are number {outcome.position} in line.",
            position=outcome.position,
        )
    if isinstance(outcome, Limited):
        return _turned_away(
            "limited",
            outcome.retry_after,
            "You have started many shells in a short time. Please wait a moment.",
        )
    if isinstance(outcome, Full):
        return _turned_away(
            "full", outcome.retry_after, "The line is full too. Please come back shortly."
        )
    assert isinstance(outcome, Failed)
    return _turned_away("retry", outcome.retry_after, f"Sorry, {outcome.reason}. Retrying.")


async def presence(request: web.Request) -> web.StreamResponse:
    session = _session(request)
    visits = request.app[VISITS]
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)
    if session is None or not visits.tab_opened(session):
        await ws.close(code=4404, message=b"no sandbox for this session")
        return ws
    try:
        async for message in ws:
            if message.type == WSMsgType.ERROR:
                break
    finally:
        visits.tab_closed(session)
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    visits = request.app[VISITS]
    return web.json_response(
        {
            "status": "ok",
            "cap": visits.admission.cap,
            "active": visits.active,
            "waiting": visits.admission.waiting,
            "created": visits.created_total,
            "deleted": visits.deleted_total,
        }
    )


async def _watch_capacity(app: web.Application) -> None:
    settings, visits = app[SETTINGS], app[VISITS]
    while True:
        try:
            hosts = await visits.sandboxes.hosts()
            cap = site_cap(hosts, settings.sandbox_memory_bytes, settings.max_sandboxes)
            if cap != visits.admission.cap:
                log.info("cap: %d sandboxes (%d hosts)", cap, len(hosts))
            visits.admission.cap = cap
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the last known cap holds until the hosts can be read
            log.warning("hosts unreadable: %s", exc)
        await asyncio.sleep(settings.capacity_refresh_seconds)


async def _background(app: web.Application) -> AsyncIterator[None]:
    visits = app[VISITS]
    await visits.adopt()
    tasks = [
        asyncio.create_task(_watch_capacity(app)),
        asyncio.create_task(visits.run_reaper()),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await visits.close(app[SETTINGS].delete_on_exit)


def create_app(settings: WebSettings, visits: Visits, signer: SessionSigner) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[VISITS] = visits
    app[SIGNER] = signer
    app.router.add_get("/", page)
    app.router.add_post("/api/visit", visit)
    app.router.add_get("/api/presence", presence)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_static("/static/", STATIC, append_version=False)
    app.cleanup_ctx.append(_background)
    return app
