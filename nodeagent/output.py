"""A session's output: the bounded buffer between the command and its client, and the removal
of the CRs a terminal's line discipline added. Pure: no I/O."""

from __future__ import annotations

from collections import deque

__all__ = ["AddedCrRemover", "OutputBuffer"]


class OutputBuffer:
    """Output not yet sent (tagged by channel, in the order read) and the most recent output
    sent (for a replay), each within its bound."""

    __slots__ = ("_history", "_pending", "_replay_limit", "history_bytes", "pending_bytes")

    def __init__(self, replay_limit: int) -> None:
        self._pending: deque[tuple[int, bytes]] = deque()
        self._history: deque[bytes] = deque()
        self._replay_limit = replay_limit
        self.pending_bytes = 0
        self.history_bytes = 0

    def push(self, channel: int, data: bytes) -> None:
        self._pending.append((channel, data))
        self.pending_bytes += len(data)

    def take(self, limit: int) -> tuple[int, bytes] | None:
        """Up to `limit` bytes of one channel, oldest first (consecutive reads joined into one
        message); they count as sent from now on."""
        if not self._pending:
            return None
        channel = self._pending[0][0]
        parts: list[bytes] = []
        size = 0
        while self._pending and self._pending[0][0] == channel and size < limit:
            _, data = self._pending.popleft()
            if size + len(data) > limit:
                data, rest = data[: limit - size], data[limit - size :]
                self._pending.appendleft((channel, rest))
            parts.append(data)
            size += len(data)
        self.pending_bytes -= size
        chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        self._remember(chunk)
        return channel, chunk

    def _remember(self, chunk: bytes) -> None:
        if self._replay_limit <= 0:
            return
        self._history.append(chunk)
        self.history_bytes += len(chunk)
        while self.history_bytes - len(self._history[0]) >= self._replay_limit:
            self.history_bytes -= len(self._history.popleft())

    def replay(self) -> bytes:
        """The most recent output sent, at most the replay limit."""
        data = b"".join(self._history)
        return data[-self._replay_limit :] if self._replay_limit else b""


class AddedCrRemover:
    """Undoes ONLCR on a stream read in pieces: a line discipline with ONLCR writes every LF
    as CR LF, so every CR LF it produced is one LF of what was written, and nothing else is
    (an original CR LF became CR CR LF). A CR at the end of a piece waits for the next byte."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = False

    def feed(self, data: bytes) -> bytes:
        if self._held:
            data = b"\r" + data
            self._held = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._held = True
        return data.replace(b"\r\n", b"\n")

    def flush(self) -> bytes:
        """What is held back, at the end of the stream."""
        held, self._held = self._held, False
        return b"\r" if held else b""
