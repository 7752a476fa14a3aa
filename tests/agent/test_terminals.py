"""Terminals over the remote-command protocol: a real pty in the container, resizes, Ctrl-C,
exit codes on channel 3, the login shell and its environment, v5 and v4 clients."""

from __future__ import annotations

import fcntl
import os
import re

import pytest

from tests import remote
from tests.agent.conftest import Container
from tests.support import Agent, lxc_attach_children, pids_named
from tuxio.common import remotecommand as rc

SUCCESS = b'{"metadata":{},"status":"Success"}'


def failure(code: int) -> bytes:
    return (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit '
        b"code: command terminated with exit code " + str(code).encode() + b'","reason":'
        b'"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"'
        + str(code).encode()
        + b'"}]}}'
    )


async def test_terminal_is_a_pty_that_follows_resizes(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.terminal())
    assert stream.protocol == rc.V5
    assert stream.state == "created"
    assert stream.session is not None and re.fullmatch(r"[0-9a-f]{32}", stream.session)
    await stream.expect(r"# ")
    # Connected is announced with an empty message on stdout, as the API server does.
    assert stream.frames[0] == rc.Frame(rc.STDOUT, b"")
    await stream.send("tty\n")
    await stream.expect(r"/dev/pts/\d+\r\n")
    await stream.send("stty size\n")
    await stream.expect(r"\b24 80\r\n")
    await stream.resize(132, 43)
    await stream.send("stty size\n")
    await stream.expect(r"\b43 132\r\n")
    # One CR per line: the agent is the terminal, nothing adds a second one.
    assert b"\r\r\n" not in stream.stdout


async def test_ctrl_c_interrupts_sleep(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.terminal())
    await stream.expect(r"# ")
    await stream.send("sleep 100\n")
    await remote.eventually(lambda: pids_named(container.init, "sleep"))
    mark = stream.mark()
    await stream.send(b"\x03")
    await stream.expect(r"\^C", since=mark)
    await remote.eventually(lambda: not pids_named(container.init, "sleep"))
    await stream.send("echo status=$?\n")
    await stream.expect(r"status=130\r\n", since=mark)


async def test_exit_code_zero_is_success(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.terminal())
    await stream.expect(r"# ")
    await stream.send("exit\n")
    status = await stream.exit_status()
    assert status.exit_code == 0
    assert stream.status == SUCCESS
    assert await stream.closed() == 1000
    assert stream.frames[-1].channel == rc.ERROR


async def test_non_zero_exit_code_is_the_api_servers_status(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.terminal())
    await stream.expect(r"# ")
    await stream.send("exit 7\n")
    assert (await stream.exit_status()).exit_code == 7
    assert stream.status == failure(7)
    assert await stream.closed() == 1000


async def test_command_on_a_terminal(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.terminal(["sh", "-c", "tty; exit 3"]))
    assert (await stream.exit_status()).exit_code == 3
    assert re.search(rb"^/dev/pts/\d+\r\n", bytes(stream.stdout))


async def test_login_shell_and_terminal_environment(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.terminal())
    await stream.expect(r"# ")
    # busybox has no bash: the login shell is sh -l.
    await stream.send("cat /proc/$$/cmdline | tr '\\0' ' '; echo\n")
    await stream.expect(r"/bin/sh -l \r\n")
    await stream.send('echo "$TERM:$LANG:$HOME:${TUXIO_AGENT_PORT:-clean}"\n')
    await stream.expect(r"xterm-256color:C\.UTF-8:/root:clean\r\n")


async def test_extra_environment(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    params = [*remote.terminal(["sh", "-c", 'echo "$TERM/$GREETING"']), ("env", "TERM=vt100")]
    params.append(("env", "GREETING=hello world"))
    stream = await streams.open(agent, container.name, params)
    assert (await stream.exit_status()).exit_code == 0
    assert b"vt100/hello world\r\n" in stream.stdout


async def test_v4_client_has_a_terminal_too(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.terminal(), protocols=(rc.V4,))
    assert stream.protocol == rc.V4
    await stream.expect(r"# ")
    await stream.send("tty; exit 5\n")
    assert (await stream.exit_status()).exit_code == 5
    assert stream.status == failure(5)
    assert re.search(rb"/dev/pts/\d+", bytes(stream.stdout))


async def test_input_sent_at_once_is_not_lost(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    """Keys sent before lxc-attach has set up its terminal (which flushes pending input) still
    arrive: the agent holds input until then."""
    stream = await streams.open(agent, container.name, remote.terminal())
    await stream.send("echo first-$((40+2)); exit 9\n")
    assert (await stream.exit_status()).exit_code == 9
    assert b"first-42" in stream.stdout


async def test_lxc_attach_runs_from_one_sealed_copy(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    """Every lxc-attach runs from the same sealed in-memory copy of the binary (LXC's guard
    against CVE-2019-5736, made once by the agent instead of once per attach), which nothing
    can write, and which the command inside does not inherit."""
    first = await streams.open(agent, container.name, remote.terminal())
    await streams.open(agent, container.name, remote.piped(["sleep", "1000"]))
    await first.expect(r"# ")
    await remote.eventually(lambda: pids_named(container.init, "sleep"))
    attach = lxc_attach_children(agent)
    assert len(attach) == 2
    images = {os.stat(f"/proc/{pid}/exe").st_ino for pid in attach}
    assert len(images) == 1
    assert os.readlink(f"/proc/{attach[0]}/exe").startswith("/memfd:lxc-attach")
    fd = os.open(f"/proc/{attach[0]}/exe", os.O_RDONLY)
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    finally:
        os.close(fd)
    assert seals == fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    with pytest.raises(OSError, match=r"Text file busy|Operation not permitted"):
        os.open(f"/proc/{attach[0]}/exe", os.O_WRONLY)
    sleep = pids_named(container.init, "sleep")[0]
    assert sorted(os.listdir(f"/proc/{sleep}/fd")) == ["0", "1", "2"]
