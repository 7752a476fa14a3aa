"""Commands without a terminal: stdout and stderr apart, stdin and its half-close, the first
empty message, exit codes, v4 (no close signal), and the end of a command whose client left."""

from __future__ import annotations

import os

import pytest

from tests import remote
from tests.agent.conftest import Container
from tests.support import Agent, pids_named, zombies_of
from tuxio.common import remotecommand as rc


async def test_stdout_and_stderr_apart(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(
        agent, container.name, remote.piped(["sh", "-c", "echo out; echo err >&2; exit 3"])
    )
    assert stream.session is None and stream.state is None  # no session without a terminal
    assert (await stream.exit_status()).exit_code == 3
    assert (bytes(stream.stdout), bytes(stream.stderr)) == (b"out\n", b"err\n")
    assert stream.frames[0] == rc.Frame(rc.STDOUT, b"")
    assert await stream.closed() == 1000


@pytest.mark.parametrize(
    ("flags", "first"),
    [
        ([("stdout", "false")], rc.Frame(rc.STDERR, b"")),
        ([("stdout", "false"), ("stderr", "false"), ("stdin", "true")], rc.Frame(rc.ERROR, b"")),
    ],
    ids=["stderr only", "stdin only"],
)
async def test_first_message_is_on_the_lowest_written_channel(
    agent: Agent,
    container: Container,
    streams: remote.Streams,
    flags: list[tuple[str, str]],
    first: rc.Frame,
) -> None:
    # With stdin, the command waits for its end (else it may be over, and the stream closed,
    # before the half-close is sent).
    script = "echo hidden; exit 0"
    if ("stdin", "true") in flags:
        script = "cat >/dev/null; " + script
    params = [("command", "sh"), ("command", "-c"), ("command", script), *flags]
    stream = await streams.open(agent, container.name, params)
    if ("stdin", "true") in flags:
        await stream.close_stdin()
    assert (await stream.exit_status()).exit_code == 0
    assert stream.frames[0] == first
    assert b"hidden" not in stream.stdout  # stdout was not asked for


async def test_half_close_ends_stdin_exactly(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    payload = os.urandom(5 * 2**20 + 17)
    stream = await streams.open(agent, container.name, remote.piped(["wc", "-c"], stdin=True))
    for start in range(0, len(payload), 32 * 1024):  # client-go sends stdin in 32 KiB pieces
        await stream.send(payload[start : start + 32 * 1024])
    await stream.close_stdin()
    assert (await stream.exit_status()).exit_code == 0
    assert bytes(stream.stdout).strip() == str(len(payload)).encode()


async def test_stdin_bytes_arrive_unchanged(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    payload = bytes(range(256)) * 1024
    stream = await streams.open(agent, container.name, remote.piped(["cat"], stdin=True))
    await stream.send(payload)
    await stream.close_stdin()
    assert (await stream.exit_status()).exit_code == 0
    assert bytes(stream.stdout) == payload


async def test_v4_has_no_close_signal(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    """v4 knows no channel 255: the message is ignored and stdin stays open (head reads on)."""
    params = remote.piped(["head", "-c", "6"], stdin=True)
    stream = await streams.open(agent, container.name, params, protocols=(rc.V4,))
    assert stream.protocol == rc.V4
    await stream.send(b"abc")
    await stream.close_stdin()
    await stream.send(b"def")
    assert (await stream.exit_status()).exit_code == 0
    assert bytes(stream.stdout) == b"abcdef"


async def test_v5_close_signal_ends_stdin(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(
        agent, container.name, remote.piped(["head", "-c", "6"], stdin=True)
    )
    await stream.send(b"abc")
    await stream.close_stdin()
    assert (await stream.exit_status()).exit_code == 0
    assert bytes(stream.stdout) == b"abc"


async def test_missing_program(agent: Agent, container: Container, streams: remote.Streams) -> None:
    stream = await streams.open(agent, container.name, remote.piped(["/no/such/program"]))
    status = await stream.exit_status()
    assert status.exit_code is not None and status.exit_code != 0


async def test_dropped_connection_ends_the_command(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.piped(["sleep", "1000"]))
    await remote.eventually(lambda: pids_named(container.init, "sleep"))
    await stream.drop()
    await remote.eventually(lambda: not pids_named(container.init, "sleep"))
    assert agent.proc is not None
    await remote.eventually(lambda: not zombies_of(agent.proc.pid))


async def test_malformed_close_signal_is_a_protocol_error(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.piped(["sleep", "1000"]))
    await remote.eventually(lambda: pids_named(container.init, "sleep"))
    await stream.ws.send(bytes([rc.CLOSE, 0, 1]))
    assert await stream.closed() == 1002
    await remote.eventually(lambda: not pids_named(container.init, "sleep"))
