"""The relay's discipline at its interfaces: it takes the next frame from one side only once the
other side has accepted the last one (backpressure), and the side that closes first closes the
other with its code. The two sides are fakes of the two libraries' connection objects, with
frames ready at once, so that a relay that read ahead would be seen reading them all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close

from tuxio.gateway.relay import relay


class Message:
    def __init__(self, kind: WSMsgType, data: Any = None) -> None:
        self.type, self.data = kind, data


class Side:
    """One end: `frames` ready to be taken at once, a send that blocks while `stuck`."""

    def __init__(self, frames: list[bytes], close_code: int | None = None) -> None:
        self.frames = list(frames)
        self.taken = 0
        self.sent: list[bytes] = []
        self.stuck = False
        self.entered = asyncio.Event()
        self.end = asyncio.Event()
        self.close_code = close_code
        self.closed_with: int | None = None

    async def _send(self, data: bytes) -> None:
        self.entered.set()
        if self.stuck:
            await asyncio.Event().wait()
        self.sent.append(data)

    async def _frames(self) -> AsyncIterator[bytes]:
        while self.frames:
            self.taken += 1
            yield self.frames.pop(0)
        await self.end.wait()


class Client(Side):
    """aiohttp's WebSocketResponse, as the relay uses it."""

    def __aiter__(self) -> AsyncIterator[Message]:
        async def messages() -> AsyncIterator[Message]:
            async for frame in self._frames():
                yield Message(WSMsgType.BINARY, frame)

        return messages()

    async def send_bytes(self, data: bytes) -> None:
        await self._send(data)

    async def send_str(self, data: str) -> None:
        await self._send(data.encode())

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed_with = code
        return True


class Agent(Side):
    """websockets' ClientConnection, as the relay uses it."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        async def frames() -> AsyncIterator[bytes]:
            async for frame in self._frames():
                yield frame
            raise ConnectionClosedOK(Close(self.close_code or 1000, ""), None)

        return frames()

    async def send(self, data: bytes) -> None:
        await self._send(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = code


FRAMES = [b"\x01" + bytes([i]) * 1000 for i in range(200)]


async def _settle() -> None:
    for _ in range(50):  # let every runnable task run: a relay reading ahead would read now
        await asyncio.sleep(0)


async def test_nothing_more_is_taken_from_the_agent_while_the_client_does_not_take() -> None:
    client, agent = Client([]), Agent(FRAMES)
    client.stuck = True
    task = asyncio.create_task(relay(client, agent))  # type: ignore[arg-type]
    await client.entered.wait()
    await _settle()
    assert agent.taken == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_nothing_more_is_taken_from_the_client_while_the_agent_does_not_take() -> None:
    client, agent = Client(FRAMES), Agent([])
    agent.stuck = True
    task = asyncio.create_task(relay(client, agent))  # type: ignore[arg-type]
    await agent.entered.wait()
    await _settle()
    assert client.taken == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert agent.closed_with == 1001  # the gateway going away


async def test_frames_pass_unchanged_in_order_and_the_agents_close_is_passed_on() -> None:
    client, agent = Client([b"\x00ls\n", b"\x04{}"]), Agent(FRAMES, close_code=1000)
    agent.end.set()
    ended = await relay(client, agent)  # type: ignore[arg-type]
    assert ended == "agent"
    assert client.sent == FRAMES
    assert client.closed_with == 1000


@pytest.mark.parametrize(("client_code", "agent_code"), [(1000, 1000), (1001, 1001), (4000, 4000)])
async def test_the_clients_close_is_passed_on(client_code: int, agent_code: int) -> None:
    client, agent = Client([b"\x00x"], close_code=client_code), Agent([])
    client.end.set()
    ended = await relay(client, agent)  # type: ignore[arg-type]
    assert ended == "client"
    assert agent.sent == [b"\x00x"]
    assert agent.closed_with == agent_code


async def test_an_agent_that_closed_while_the_client_still_sends_is_passed_on() -> None:
    """A command ends (the agent sends its status and closes) while the client is still
    sending (stdin, a half-close): the send fails, and what the agent sent and its close still
    reach the client."""

    class Closed(Agent):
        async def send(self, data: bytes) -> None:
            await self.sent_once.wait()
            raise ConnectionClosedOK(Close(1000, ""), None)

    client = Client([b"\x00stdin", b"\xff\x00"])
    agent = Closed([b"\x03{}"], close_code=1000)
    agent.sent_once = asyncio.Event()  # type: ignore[attr-defined]
    relayed = asyncio.create_task(relay(client, agent))  # type: ignore[arg-type]
    await client.entered.wait()  # the status frame is on its way to the client
    agent.sent_once.set()  # type: ignore[attr-defined]
    agent.end.set()  # then the agent's close
    assert await relayed == "agent"
    assert client.sent == [b"\x03{}"]
    assert client.closed_with == 1000
