"""One stream, relayed frame for frame between a client's WebSocket and an agent's.

Each direction is one loop: take a message from one side, hand it to the other, and take the
next only once that one is accepted. Neither library reads ahead without bound (aiohttp pauses
reading its socket past 64 KiB queued, websockets past 16 messages), and both wait for their
socket to drain before a send returns, so a side that does not read holds back the other
(backpressure end to end: a flood in the sandbox blocks its writer, never the gateway's
memory). The first side to close ends the stream; its close code is passed on to the other.
The frames are not parsed: the remote-command protocol is the agent's and the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, WSMsgType, web
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

__all__ = ["relay"]

log = logging.getLogger(__name__)

# Close codes a client may not send as such (1005: none given, 1006: no close frame).
_REPLACE = {1005: 1000, 1006: 1001}


async def _client_to_agent(client: web.WebSocketResponse, agent: ClientConnection) -> int:
    """Until the client closes; its close code. When the agent has closed first (a command
    that ended while the client was still sending), this loop stops and waits to be
    cancelled: the other one delivers what the agent sent and its close."""
    async for message in client:
        if message.type in (WSMsgType.BINARY, WSMsgType.TEXT):
            try:
                await agent.send(message.data)
            except ConnectionClosed:
                await asyncio.get_running_loop().create_future()  # until cancelled
        elif message.type == WSMsgType.ERROR:
            return int(WSCloseCode.ABNORMAL_CLOSURE)
    return int(client.close_code or WSCloseCode.OK)


async def _agent_to_client(agent: ClientConnection, client: web.WebSocketResponse) -> int:
    """Until the agent closes; its close code."""
    try:
        async for data in agent:
            if isinstance(data, bytes):
                await client.send_bytes(data)
            else:
                await client.send_str(data)
    except ConnectionClosed:
        pass
    code = agent.close_code if agent.close_code is not None else 1006
    return _REPLACE.get(code, code)


async def relay(client: web.WebSocketResponse, agent: ClientConnection) -> str:
    """Relay until one side closes, then close the other with the same code. Which side
    ended it comes back ("client" or "agent")."""
    upstream = asyncio.create_task(_client_to_agent(client, agent), name="client->agent")
    downstream = asyncio.create_task(_agent_to_client(agent, client), name="agent->client")
    try:
        done, _ = await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        upstream.cancel()
        downstream.cancel()
        await agent.close(1001, "gateway going away")
        raise
    if downstream in done:
        ended = "agent"
        code = _result(downstream, 1011)
        # What the agent sent before its close is out already; the client gets the same code.
        upstream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upstream
        await client.close(code=code)
    else:
        ended = "client"
        code = _REPLACE.get(_result(upstream, 1001), _result(upstream, 1001))
        downstream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await downstream
        await agent.close(code if 1000 <= code < 5000 and code not in (1004, 1005, 1006) else 1000)
    return ended


def _result(task: asyncio.Task[int], otherwise: int) -> int:
    if task.cancelled() or task.exception() is not None:
        if not task.cancelled():
            log.debug("relay %s ended with %r", task.get_name(), task.exception())
        return otherwise
    return task.result()
