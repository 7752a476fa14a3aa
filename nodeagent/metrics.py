"""The agent's own measurements: requests, clones and starts (prometheus_client, default
registry). What containers use is read at scrape time by tuxio.nodeagent.sandbox_collector."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Histogram

from tuxio.common.metrics import SHORT_BUCKETS

__all__ = ["CLONE_SECONDS", "REQUEST_SECONDS", "START_SECONDS", "RequestMetrics"]

REQUEST_SECONDS = Histogram(
    "tuxio_agent_request_duration_seconds",
    "HTTP requests to the agent's API, by method, route template and status code.",
    ["method", "route", "code"],
    buckets=SHORT_BUCKETS,
)
CLONE_SECONDS = Histogram(
    "tuxio_agent_clone_duration_seconds",
    "Making a container's overlay clone of its template (directories, record, config).",
    ["template"],
    buckets=SHORT_BUCKETS,
)
START_SECONDS = Histogram(
    "tuxio_agent_start_duration_seconds",
    "Starting a container: lxc-start until its init runs, as LXC reports it.",
    ["template"],
    buckets=SHORT_BUCKETS,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestMetrics:
    """ASGI middleware: the duration of each HTTP request, labelled by the route's template
    (`/v1/containers/{name}`, never the name itself), so the label stays bounded; requests no
    route matched count under `route="unmatched"`. WebSocket sessions are streams, not
    requests: they are not timed here."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def sending(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUEST_SECONDS.labels(scope.get("method", ""), template, str(code)).observe(
                time.perf_counter() - started
            )
