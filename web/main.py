"""`tuxio-web`: the site that gives every visitor a Linux shell in the browser.

tuxio-web        settings from TUXIO_WEB_* (see settings.py), credentials from the
                 kubeconfig ($KUBECONFIG, TUXIO_WEB_KUBECONFIG) or the in-cluster account
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal

from aiohttp import web

from .admission import Admission
from .app import create_app
from .cookies import SessionSigner
from .ratelimit import RateLimiter
from .sandboxes import SdkSandboxes
from .settings import WebSettings
from .visits import Visits

__all__ = ["main"]

log = logging.getLogger("tuxio.web")


async def serve(settings: WebSettings) -> None:
    key = settings.secret_file.read_bytes() if settings.secret_file else secrets.token_bytes(32)
    sandboxes = await SdkSandboxes.connect(
        settings.kubeconfig,
        namespace=settings.namespace,
        pool=settings.pool,
        ttl_seconds=settings.ttl_seconds,
        token_seconds=settings.token_seconds,
        ready_timeout=settings.ready_timeout_seconds,
    )
    visits = Visits(
        sandboxes,
        Admission(settings.queue_length, settings.queue_ticket_seconds),
        RateLimiter(settings.rate_per_minute, settings.rate_burst),
        settings.namespace,
        settings.grace_seconds,
        settings.ttl_seconds,
    )
    app = create_app(settings, visits, SessionSigner(key))
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.listen, settings.port).start()
        log.info("serving on %s:%d", settings.listen, settings.port)
        await stop.wait()
    finally:
        await runner.cleanup()  # deletes the sandboxes still held
        await sandboxes.close()


def main() -> None:
    settings = WebSettings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(serve(settings))
