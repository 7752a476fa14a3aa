"""Prometheus metrics for every component: build info, the /metrics handler and its own
listener, and the histogram buckets latencies share.

Each component defines its metrics in its own module with prometheus_client, in the default
registry (with the process and Python collectors beside them), and serves them here:

- `serve_metrics(host, port)`: a plain-HTTP aiohttp listener of its own answering
  `GET /metrics` (and `/healthz`), started and stopped as an async context manager or with
  `MetricsServer.start()` / `stop()`: how the operator, the gateway and the agent serve them.
- `metrics_handler(registry)`: an aiohttp handler to mount in an application of one's own
  (`app.router.add_get("/metrics", metrics_handler())`): how a frontend built on aiohttp adds
  them to its app. An ASGI application mounts `prometheus_client.make_asgi_app()` instead.
- `register_build_info(component, version)`: `tuxio_build_info{component,version,python}` 1.
- `render_families(families)`: the text format of counter and gauge families, five times
  faster than prometheus_client's generator, for a collector of thousands of series (the
  agent's per-sandbox one, whose scrape must stay within 50 ms for 1000 sandboxes). Such a
  collector's own text (a function returning it) is served after the registry's by
  `serve_metrics(..., fast=[render])`.

Names follow Prometheus' conventions: a `tuxio_` prefix, base units (`_seconds`, `_bytes`),
`_total` on counters; no label ever carries a visitor, an address or anything else unbounded.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

__all__ = [
    "LATENCY_BUCKETS",
    "SHORT_BUCKETS",
    "MetricsServer",
    "metrics_handler",
    "register_build_info",
    "render_families",
    "request_timer",
    "serve_metrics",
]

# Sandbox launches: from a few milliseconds (a warm claim) to tens of seconds (a cold start on
# a busy host).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# One step on a host or one request: sub-millisecond to seconds.
SHORT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

_BUILD_INFO: dict[int, Gauge] = {}


def register_build_info(
    component: str, version: str, registry: CollectorRegistry = REGISTRY
) -> None:
    """`tuxio_build_info` = 1 with what runs; once per registry (a second call relabels)."""
    gauge = _BUILD_INFO.get(id(registry))
    if gauge is None:
        gauge = Gauge(
            "tuxio_build_info",
            "What runs: the component, its version and the Python version; always 1.",
            ["component", "version", "python"],
            registry=registry,
        )
        _BUILD_INFO[id(registry)] = gauge
    gauge.labels(component, version, platform.python_version()).set(1)


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _number(value: float) -> str:
    if isinstance(value, int) or math.isfinite(value):
        return repr(value)
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"  # as Prometheus spells them


def render_families(families: Iterable[Metric]) -> bytes:
    """Counter and gauge families in Prometheus' text format (version 0.0.4), as
    generate_latest writes them (a test holds the two equal), without its per-sample cost:
    names and help are written once a family, values with repr(), labels escaped only when
    they need it. Other types are refused (ValueError): they go through the registry."""
    out: list[str] = []
    for family in families:
        if family.type not in ("counter", "gauge"):
            raise ValueError(f"render_families: {family.name} is a {family.type}")
        name = f"{family.name}_total" if family.type == "counter" else family.name
        text = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {text}\n# TYPE {name} {family.type}\n")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
                out.append(f"{sample.name}{{{labels}}} {_number(sample.value)}\n")
            else:
                out.append(f"{sample.name} {_number(sample.value)}\n")
    return "".join(out).encode()


Renderer = Callable[[], bytes]


def metrics_handler(
    registry: CollectorRegistry = REGISTRY, fast: Sequence[Renderer] = ()
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler answering with the registry in Prometheus' text format, then what
    each of the `fast` renderers writes (families of their own, in the same format).

    Collection runs on the event loop: the collectors read memory or a few small files."""

    async def handle(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        for render in fast:
            body += render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


def request_timer(histogram: Histogram) -> Any:
    """An aiohttp middleware observing each request's duration into `histogram`, labelled
    (method, route, code) with the route's template (`/apis/.../{name}/token`, never a
    name), `unmatched` for none. WebSocket upgrades are streams, not requests: not timed."""

    @web.middleware
    async def timed(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)
        started = time.perf_counter()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            route = request.match_info.route
            template = route.resource.canonical if route.resource is not None else "unmatched"
            histogram.labels(request.method, template, str(code)).observe(
                time.perf_counter() - started
            )

    return timed


class MetricsServer:
    """A plain-HTTP listener of its own for /metrics: a scrape never waits behind the
    component's API (nor its authentication: metrics name no secret, and Prometheus gets no
    credential that could do anything else)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry = REGISTRY,
        fast: Sequence[Renderer] = (),
    ) -> None:
        self.host = host
        self.port = port
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler(registry, fast))
        app.router.add_get("/healthz", _healthz)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # an ephemeral port (tests): the one the kernel gave
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def serve_metrics(
    host: str, port: int, registry: CollectorRegistry = REGISTRY, fast: Sequence[Renderer] = ()
) -> MetricsServer:
    """The listener for `registry` (then the `fast` renderers' text) on host:port
    (`async with serve_metrics(...)`)."""
    return MetricsServer(host, port, registry, fast)


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
