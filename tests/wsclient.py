"""A blocking WebSocket client for tests and benchmarks whose every socket operation runs on
one thread.

`websockets.sync.client` reads on a background thread while the caller's thread writes, on the
same socket. Over TLS that is one OpenSSL `SSL` object used by two threads at once, which
OpenSSL does not allow and CPython 3.11's `ssl` module does not guard: in this suite it showed
as a handshake that never got its answer (30 s, then TimeoutError) and once as the whole pytest
process aborting inside `SSLSocket.send`. This facade runs `websockets.asyncio.client` on an
event loop of its own thread instead (as `tuxio.client.sync` does for the SDK): the caller
blocks, the TLS object is only ever touched by that loop. The subset of the sync client's
interface the tests use is kept (`send`, `recv(timeout=)`, iteration, `close`, `response`,
`subprotocol`, a context manager) and errors are websockets' own (`InvalidStatus`, ...).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

__all__ = ["ClientConnection", "connect"]

T = TypeVar("T")


class _Loop:
    """An event loop on a daemon thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="wsclient", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
        self.loop.close()


class ClientConnection:
    """An open connection: blocking calls, each carried out on the connection's own loop."""

    def __init__(self, loop: _Loop, ws: AsyncConnection) -> None:
        self._loop, self._ws = loop, ws

    @property
    def response(self) -> Response | None:
        return self._ws.response

    @property
    def subprotocol(self) -> str | None:
        return self._ws.subprotocol

    @property
    def request_headers(self) -> Headers | None:
        return self._ws.request.headers if self._ws.request is not None else None

    def send(self, message: bytes | str) -> None:
        self._loop.run(self._ws.send(message))

    def recv(self, timeout: float | None = None) -> bytes | str:
        """The next message; TimeoutError after `timeout` seconds (the connection stays open),
        ConnectionClosed once it is closed."""

        async def receive() -> bytes | str:
            return await asyncio.wait_for(self._ws.recv(), timeout)

        return self._loop.run(receive())

    def __iter__(self) -> Iterator[bytes | str]:
        while True:
            try:
                yield self.recv()
            except ConnectionClosed:
                return

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (waiting for the closing handshake) and stop its loop."""
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self._ws.close(code, reason))
        finally:
            self._loop.stop()

    def __enter__(self) -> ClientConnection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect(uri: str, **options: Any) -> ClientConnection:
    """Open a connection as `websockets.asyncio.client.connect(uri, **options)` does (the same
    options: `subprotocols`, `additional_headers`, `origin`, `ssl`, `server_hostname`,
    `open_timeout`, ...); a refused handshake raises what it raises there."""
    loop = _Loop()

    async def opening() -> AsyncConnection:
        return await async_connect(uri, **options)

    try:
        ws = loop.run(opening())
    except BaseException:
        loop.stop()
        raise
    return ClientConnection(loop, ws)
