"""A session's output: the buffer's bounds and the removal of added CRs."""

from __future__ import annotations

import itertools

import pytest

from tuxio.nodeagent.output import AddedCrRemover, OutputBuffer

WRITTEN = [
    b"plain\n",
    b"crlf already\r\n",
    b"\n\n\r\r\n\r",
    b"no newline at all",
    b"\r\n\r\n",
    b"mixed\ra\rb\n\r\nc",
]


def onlcr(data: bytes) -> bytes:
    """What a line discipline with OPOST|ONLCR makes of `data`."""
    return data.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("written", WRITTEN)
def test_added_crs_are_removed_exactly_however_the_stream_is_cut(written: bytes) -> None:
    received = onlcr(written)
    for cuts in itertools.combinations(range(1, len(received)), min(3, len(received) - 1)):
        remover = AddedCrRemover()
        pieces = [received[a:b] for a, b in itertools.pairwise((0, *cuts, len(received)))]
        out = b"".join(remover.feed(piece) for piece in pieces) + remover.flush()
        assert out == written, (pieces, out)


def test_output_buffer_joins_reads_of_one_channel_up_to_a_limit() -> None:
    buffer = OutputBuffer(replay_limit=0)
    for chunk in (b"ab", b"cd", b"ef"):
        buffer.push(1, chunk)
    buffer.push(2, b"err")
    buffer.push(1, b"gh")
    assert buffer.pending_bytes == 11
    assert buffer.take(5) == (1, b"abcde")
    assert buffer.take(64) == (1, b"f")
    assert buffer.take(64) == (2, b"err")
    assert buffer.take(64) == (1, b"gh")
    assert buffer.take(64) is None
    assert buffer.pending_bytes == 0
    assert buffer.replay() == b""


def test_replay_keeps_the_most_recent_sent_output_within_its_limit() -> None:
    buffer = OutputBuffer(replay_limit=10)
    for index in range(20):
        buffer.push(1, b"%02d" % index)
        buffer.take(64)
    assert buffer.replay() == b"1516171819"
    assert buffer.history_bytes <= 10 + 2  # whole chunks are kept, at most one over
    buffer.push(1, b"pending")
    assert buffer.replay() == b"1516171819"  # only what was sent is replayed
