"""One WebSocket connection to a session, in the remote-command protocol.

The connection says it is up with an empty message on its lowest output channel, replays the
session's recent output on channel 1, then moves frames both ways: output as the session reads
it (each send awaits the transport's drain, so a slow client slows the reading), input, resizes
and (v5) the close of stdin as they come. When the command is done it sends the exit status on
channel 3 and closes normally. The Peer protocol keeps the WebSocket library out of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from typing import Protocol

from tuxio.common import remotecommand as rc

from .terminals import STDIN_BACKLOG_BYTES, Attachment, Session

__all__ = ["CLOSE_REPLACED", "Peer", "PeerGone", "serve"]

log = logging.getLogger(__name__)

# Output messages are at most this large (reads are joined up to it).
MAX_MESSAGE_BYTES = 64 * 1024
# WebSocket close codes: normal; protocol error; and tuxio's own (4000-4999 are the
# application's): another connection attached to the session.
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_REPLACED = 4001


class PeerGone(Exception):
    """The client's connection is gone."""


class Peer(Protocol):
    """The client end of one connection."""

    async def send(self, message: bytes) -> None:
        """Send one binary message; returns once the transport took it (PeerGone if gone)."""

    async def receive(self) -> bytes | None:
        """The next message (text as its UTF-8 bytes, as the API server reads it); None once
        the client is gone."""

    async def close(self, code: int, reason: str = "") -> None:
        """Close the connection (nothing if it is gone already)."""


class _End(enum.Enum):
    FINISHED = "finished"
    REPLACED = "replaced"
    DISCONNECTED = "disconnected"
    PROTOCOL_ERROR = "protocol error"


async def serve(session: Session, peer: Peer, protocol: str, stdout: bool, stderr: bool) -> None:
    """Serve `peer` for `session` until the command is done, the client goes, or another
    client attaches to the session."""
    attachment, replay = session.attach()
    try:
        try:
            end = await _run(session, attachment, peer, protocol, stdout, stderr, replay)
        except PeerGone:
            end = _End.DISCONNECTED
        log.debug("connection to session %s/%s: %s", session.container, session.id, end.value)
        if end is _End.FINISHED:
            session.status_delivered(attachment)
            await peer.close(CLOSE_NORMAL)
        elif end is _End.REPLACED:
            await peer.close(CLOSE_REPLACED, "attached from another connection")
        elif end is _End.PROTOCOL_ERROR:
            await peer.close(CLOSE_PROTOCOL_ERROR, "protocol error")
    finally:
        session.detach(attachment)


async def _run(
    session: Session,
    attachment: Attachment,
    peer: Peer,
    protocol: str,
    stdout: bool,
    stderr: bool,
    replay: bytes,
) -> _End:
    await peer.send(rc.data_frame(rc.first_channel(stdout, stderr), b""))
    for start in range(0, len(replay), MAX_MESSAGE_BYTES):
        await peer.send(rc.data_frame(rc.STDOUT, replay[start : start + MAX_MESSAGE_BYTES]))
    output = asyncio.create_task(_pump_output(session, attachment, peer))
    receiving = asyncio.create_task(_pump_input(session, attachment, peer, protocol))
    try:
        done, _ = await asyncio.wait({output, receiving}, return_when=asyncio.FIRST_COMPLETED)
        first = output if output in done else receiving
        return first.result()
    finally:
        for task in (output, receiving):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, PeerGone):
                    await task


async def _pump_output(session: Session, attachment: Attachment, peer: Peer) -> _End:
    while True:
        if attachment.replaced:
            return _End.REPLACED
        item = session.take_output(MAX_MESSAGE_BYTES)
        if item is not None:
            channel, data = item
            await peer.send(rc.data_frame(channel, data))
            continue
        if session.finished:
            assert session.exit_code is not None
            status = rc.exit_code_status(session.exit_code)
            await peer.send(rc.data_frame(rc.ERROR, rc.status_payload(status)))
            return _End.FINISHED
        attachment.wake.clear()
        await attachment.wake.wait()


async def _pump_input(session: Session, attachment: Attachment, peer: Peer, protocol: str) -> _End:
    resizes = rc.ResizeDecoder()
    while True:
        message = await peer.receive()
        if message is None:
            return _End.DISCONNECTED
        if attachment.replaced:
            continue
        frame = rc.decode_frame(message)
        if frame is None:
            continue
        if frame.channel == rc.CLOSE and protocol == rc.V5:
            try:
                channel = rc.closed_channel(frame)
            except rc.ProtocolError as exc:
                log.info("session %s/%s: %s", session.container, session.id, exc)
                return _End.PROTOCOL_ERROR
            if channel == rc.STDIN:
                session.close_stdin()
        elif frame.channel == rc.STDIN:
            session.write_stdin(frame.data)
            if session.stdin_backlog > STDIN_BACKLOG_BYTES:
                await session.stdin_room()
        elif frame.channel == rc.RESIZE:
            try:
                sizes = resizes.feed(frame.data)
            except rc.ProtocolError as exc:
                log.info("session %s/%s: %s (ignored)", session.container, session.id, exc)
                continue
            for size in sizes:
                session.resize(size.width, size.height)
        # Other channels are not read by the server (the API server ignores them too).
