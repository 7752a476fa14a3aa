"""`tuxio-gateway`: serve the aggregated API and the visitor endpoint, or manage the signing keys.

    tuxio-gateway [serve]                 settings from TUXIO_GATEWAY_* (see settings.py)
    tuxio-gateway signing-key list        the keys in the Secret, the current one marked
    tuxio-gateway signing-key rotate      add a key and make it current (old ones still verify)
    tuxio-gateway signing-key remove KID  drop an old key: its tokens are refused from then on

The signing-key commands use the caller's kubeconfig ($KUBECONFIG, or the in-cluster account)
and write only the Secret named by TUXIO_GATEWAY_SIGNING_KEY_SECRET/_NAMESPACE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version

from aiohttp import web

from tuxio.common.metrics import register_build_info, serve_metrics

from .api import create_api_app
from .kube import Kube, load_api_client
from .runtime import Gateway
from .settings import GatewaySettings
from .signingkeys import read_ring, write_ring
from .tokens import MalformedKeyRing
from .visitor import create_visitor_app

__all__ = ["main"]

log = logging.getLogger("tuxio.gateway")

# Open WebSockets are closed with 1001 (going away) on SIGTERM after at most this long; the
# clients reconnect through another replica, and terminal sessions are kept by the agents.
SHUTDOWN_SECONDS = 10.0


def _visitor_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    if not settings.visitor_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.visitor_cert, settings.visitor_key)
    return context


async def serve(settings: GatewaySettings) -> None:
    kube = Kube(await load_api_client())
    gateway = Gateway(settings, kube)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    access = logging.getLogger("aiohttp.access") if settings.access_log else None
    runners = [
        web.AppRunner(app, access_log=access, shutdown_timeout=SHUTDOWN_SECONDS)
        for app in (create_api_app(gateway), create_visitor_app(gateway))
    ]
    runners_stop: list[Callable[[], Awaitable[None]]] = []
    try:
        async with gateway.running():
            for runner in runners:
                await runner.setup()
            await web.TCPSite(
                runners[0],
                settings.api_listen,
                settings.api_port,
                ssl_context=gateway.contexts.listening,
            ).start()
            await web.TCPSite(
                runners[1],
                settings.visitor_listen,
                settings.visitor_port,
                ssl_context=_visitor_context(settings),
            ).start()
            if settings.metrics_port:
                register_build_info("gateway", version("tuxio"))
                metrics = serve_metrics(settings.metrics_listen, settings.metrics_port)
                await metrics.start()
                runners_stop.append(metrics.stop)
            log.info(
                "replica %s: aggregated API on %s:%d, visitors on %s:%d",
                settings.replica,
                settings.api_listen,
                settings.api_port,
                settings.visitor_listen,
                settings.visitor_port,
            )
            await stop.wait()
            log.info("replica %s: stopping", settings.replica)
    finally:
        for stop_metrics in runners_stop:
            await stop_metrics()
        for runner in runners:
            await runner.cleanup()
        await kube.close()


async def _signing_key(settings: GatewaySettings, args: argparse.Namespace) -> int:
    kube = Kube(await load_api_client())
    ns, name = settings.signing_key_namespace, settings.signing_key_secret
    try:
        ring, version = await read_ring(kube, ns, name)
        if args.action == "list":
            for kid in sorted(ring.keys if ring else ()):
                print(f"{kid}{'  (current)' if ring and kid == ring.current else ''}")
            return 0
        if ring is None:
            print(f"{ns}/{name} holds no key yet: a gateway makes the first at start")
            return 1
        new = ring.rotated(datetime.now(UTC)) if args.action == "rotate" else ring.without(args.kid)
        await write_ring(kube, ns, name, new, version, before=ring)
        print(f"{ns}/{name}: current key {new.current}; keys {', '.join(sorted(new.keys))}")
        return 0
    except MalformedKeyRing as exc:
        print(f"{ns}/{name}: {exc}", file=sys.stderr)
        return 1
    finally:
        await kube.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tuxio-gateway", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve (the default)")
    keys = commands.add_parser("signing-key", help="list, rotate or remove signing keys")
    actions = keys.add_subparsers(dest="action", required=True)
    actions.add_parser("list")
    actions.add_parser("rotate")
    actions.add_parser("remove").add_argument("kid")
    args = parser.parse_args(argv)

    settings = GatewaySettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # websockets logs a whole handshake at debug; the gateway's own lines say what matters.
    logging.getLogger("websockets").setLevel(logging.INFO)
    if args.command == "signing-key":
        return asyncio.run(_signing_key(settings, args))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
