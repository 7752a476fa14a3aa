"""The sync face: the same client, sandbox, terminal and files, each call run to its end on
one event loop that a background thread of the `Client` runs (so a sync caller, a script or a
test, never needs a loop of its own). Every method is the async one's, awaited."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from .aclient import AsyncClient
from .api import ExecResult, SandboxState, VisitorToken
from .files import AsyncFiles
from .sandbox import AsyncSandbox
from .streams import AsyncTerminal, Channel, ExecStream

__all__ = ["Client", "Files", "Sandbox", "Terminal"]

T = TypeVar("T")


class _Loop:
    """An event loop on a daemon thread; `run` waits for a coroutine's result there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="tuxio-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        self.loop.close()


class Files:
    """The files of one sandbox (see AsyncFiles)."""

    def __init__(self, files: AsyncFiles, loop: _Loop) -> None:
        self._files, self._loop = files, loop

    def read(self, path: str) -> bytes:
        return self._loop.run(self._files.read(path))

    def list(self, path: str) -> list[dict[str, Any]]:
        return self._loop.run(self._files.list(path))

    def write(self, path: str, data: bytes | str, mode: int = 0o644) -> dict[str, Any]:
        return self._loop.run(self._files.write(path, data, mode))

    def remove(self, path: str) -> None:
        self._loop.run(self._files.remove(path))


class Terminal:
    """A terminal (see AsyncTerminal)."""

    def __init__(self, terminal: AsyncTerminal, loop: _Loop) -> None:
        self._terminal, self._loop = terminal, loop

    @property
    def session_id(self) -> str:
        return self._terminal.session_id

    @property
    def state(self) -> str:
        return self._terminal.state

    @property
    def exit_code(self) -> int | None:
        return self._terminal.exit_code

    @property
    def ended(self) -> bool:
        return self._terminal.ended

    def send(self, data: bytes | str) -> None:
        self._loop.run(self._terminal.send(data))

    def recv(self, timeout: float | None = None) -> bytes:
        return self._loop.run(self._terminal.recv(timeout))

    def read_until(self, needle: bytes, timeout: float | None = None) -> bytes:
        return self._loop.run(self._terminal.read_until(needle, timeout))

    def resize(self, cols: int, rows: int) -> None:
        self._loop.run(self._terminal.resize(cols, rows))

    def wait(self, timeout: float | None = None) -> int | None:
        return self._loop.run(self._terminal.wait(timeout))

    def close(self) -> None:
        self._loop.run(self._terminal.close())

    def kill(self) -> None:
        self._loop.run(self._terminal.kill())

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Sandbox:
    """A Sandbox (see AsyncSandbox); `with sandbox:` deletes it on the way out."""

    def __init__(self, sandbox: AsyncSandbox, loop: _Loop) -> None:
        self._sandbox, self._loop = sandbox, loop
        self.files = Files(sandbox.files, loop)

    def __repr__(self) -> str:
        return f"Sandbox({self.namespace}/{self.name}, phase={self.phase})"

    @property
    def name(self) -> str:
        return self._sandbox.name

    @property
    def namespace(self) -> str:
        return self._sandbox.namespace

    @property
    def uid(self) -> str:
        return self._sandbox.uid

    @property
    def host(self) -> str | None:
        return self._sandbox.host

    @property
    def phase(self) -> str | None:
        return self._sandbox.phase

    @property
    def ready(self) -> bool:
        return self._sandbox.ready

    @property
    def state(self) -> SandboxState:
        return self._sandbox.state

    def refresh(self) -> Sandbox:
        self._loop.run(self._sandbox.refresh())
        return self

    def wait_ready(self, timeout: float = 30.0) -> Sandbox:
        self._loop.run(self._sandbox.wait_ready(timeout))
        return self

    def exec(
        self,
        command: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = 60.0,
    ) -> ExecResult:
        return self._loop.run(self._sandbox.exec(command, stdin=stdin, env=env, timeout=timeout))

    def exec_stream(
        self,
        command: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Iterator[tuple[Channel, bytes]]:
        """The output as it comes; the exit code is the generator's return value (and what
        `exec_stream_result` of the StopIteration carries)."""
        stream = self._sandbox.exec_stream(command, stdin=stdin, env=env)
        return self._iterate(stream)

    def _iterate(self, stream: ExecStream) -> Iterator[tuple[Channel, bytes]]:
        frames = aiter(stream)
        try:
            while True:
                try:
                    yield self._loop.run(anext(frames))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            self._loop.run(stream.close())

    def terminal(
        self,
        cols: int = 80,
        rows: int = 24,
        *,
        session: str | None = None,
        command: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Terminal:
        return Terminal(
            self._loop.run(
                self._sandbox.terminal(
                    cols, rows, session=session, command=command, env=env, timeout=timeout
                )
            ),
            self._loop,
        )

    def end_session(self, session: str) -> None:
        self._loop.run(self._sandbox.end_session(session))

    def token(
        self, scopes: Sequence[str] = ("terminal",), seconds: int | None = None
    ) -> VisitorToken:
        return self._loop.run(self._sandbox.token(scopes, seconds))

    def delete(self, wait: bool = False, timeout: float = 60.0) -> None:
        self._loop.run(self._sandbox.delete(wait, timeout))

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.delete()


class Client:
    """`with Client() as tux:` ... the AsyncClient's arguments and methods, sync."""

    def __init__(
        self,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
    ) -> None:
        self._loop = _Loop()
        self._client = AsyncClient(kubeconfig, context, namespace)

    @property
    def namespace(self) -> str:
        self._loop.run(self._client.connect())
        return self._client.namespace

    def close(self) -> None:
        self._loop.run(self._client.close())
        self._loop.stop()

    def __enter__(self) -> Client:
        self._loop.run(self._client.connect())
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def create(self, **kwargs: Any) -> Sandbox:
        """As AsyncClient.create (keyword arguments only)."""
        return Sandbox(self._loop.run(self._client.create(**kwargs)), self._loop)

    def get(self, name: str, namespace: str | None = None) -> Sandbox:
        return Sandbox(self._loop.run(self._client.get(name, namespace)), self._loop)

    def list(
        self, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Sandbox]:
        found = self._loop.run(self._client.list(namespace, labels))
        return [Sandbox(s, self._loop) for s in found]
