"""The official Python `kubernetes` client's stream module works against the agent unchanged
(the gateway passes frames through, so what it speaks here it speaks there)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kubernetes.client import Configuration
from kubernetes.stream.ws_client import V5_CHANNEL_PROTOCOL, WSClient

from tests.agent.conftest import Container
from tests.remote import exec_url
from tests.support import Agent


@contextlib.contextmanager
def connect(
    agent: Agent, container: Container, params: list[tuple[str, str]]
) -> Iterator[WSClient]:
    url = exec_url(agent, container.name, params)
    headers = {"authorization": f"Bearer {agent.token}"}
    client = WSClient(Configuration(), url, headers, capture_all=True, binary=True)
    try:
        yield client
    finally:
        client.close()
        client.sock.shutdown()  # closes the socket even once the server closed the stream


def test_exec_with_stdin_half_close_and_exit_code(agent: Agent, container: Container) -> None:
    params = [
        *(("command", arg) for arg in ["sh", "-c", "cat; echo to-stderr >&2; exit 3"]),
        ("stdin", "True"),  # as the client's generated code writes booleans
        ("stdout", "True"),
        ("stderr", "True"),
        ("tty", "False"),
    ]
    with connect(agent, container, params) as client:
        assert client.subprotocol == V5_CHANNEL_PROTOCOL
        client.write_stdin(b"from stdin\n")
        client.close_channel(0)
        client.run_forever(timeout=60)
        assert client.read_stdout() == b"from stdin\n"
        assert client.read_stderr() == b"to-stderr\n"
        assert client.returncode == 3


def test_terminal(agent: Agent, container: Container) -> None:
    params = [("command", "sh"), ("command", "-c"), ("command", "tty; exit 0")]
    params += [("stdin", "true"), ("stdout", "true"), ("tty", "true")]
    with connect(agent, container, params) as client:
        client.run_forever(timeout=60)
        assert client.read_stdout().startswith(b"/dev/pts/")
        assert client.returncode == 0
