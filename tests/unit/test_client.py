"""The SDK's and the plugin's pure parts: the exact requests (paths, manifests, queries, token
bodies), how answers and errors are read, the plugin's command line and cp locations; and the
stream and input plumbing against real sockets and pipes on this machine."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tuxio.client import api
from tuxio.client.console import input_chunks
from tuxio.client.errors import (
    SandboxConflict,
    SandboxError,
    SandboxForbidden,
    SandboxInvalid,
    SandboxNotFound,
    SandboxUnauthorized,
    error_for,
)
from tuxio.client.plugin import parse
from tuxio.client.streams import AsyncTerminal, ExecStream, collect
from tuxio.client.transfer import RemotePath, parse_location
from tuxio.common import remotecommand as rc


def test_paths() -> None:
    assert api.sandboxes_path("team") == "/apis/tux.io/v1alpha1/namespaces/team/sandboxes"
    assert api.sandbox_path("team", "visitor-42") == (
        "/apis/tux.io/v1alpha1/namespaces/team/sandboxes/visitor-42"
    )
    assert api.subresource_path("team", "visitor-42", "terminal") == (
        "/apis/subresources.tux.io/v1alpha1/namespaces/team/sandboxes/visitor-42/terminal"
    )


@pytest.mark.parametrize("name", ["", "Upper", "a_b", "-a", "a-", "x" * 64, "../etc"])
def test_names_are_dns_labels(name: str) -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        api.sandbox_path("team", name)


@pytest.mark.parametrize(
    ("kwargs", "metadata", "spec"),
    [
        ({"name": "a", "template": "busybox"}, {"name": "a"}, {"template": "busybox"}),
        (
            {"generate_name": "visitor-", "pool": "web", "client_ip": "203.0.113.7",
             "ttl_seconds": 3600, "labels": {"app": "web"}},
            {"generateName": "visitor-", "labels": {"app": "web"}},
            {"poolRef": {"name": "web"}, "lifetime": {"ttlSeconds": 3600},
             "placement": {"clientIP": "203.0.113.7"}},
        ),
        (
            {"name": "b", "template": "debian", "cpus": 2, "memory": "512Mi", "pids": 64,
             "resources": {"nofile": 4096}, "region": "eu", "host_selector": {"disk": "ssd"}},
            {"name": "b"},
            {"template": "debian",
             "resources": {"nofile": 4096, "cpus": 2, "memory": "512Mi", "pids": 64},
             "placement": {"region": "eu", "hostSelector": {"disk": "ssd"}}},
        ),
    ],
)  # fmt: skip
def test_sandbox_manifest(
    kwargs: dict[str, Any], metadata: dict[str, Any], spec: dict[str, Any]
) -> None:
    assert api.sandbox_manifest(**kwargs) == {
        "apiVersion": "tux.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": metadata,
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a"}, "exactly one of template and pool"),
        ({"name": "a", "template": "t", "pool": "p"}, "exactly one of template and pool"),
        ({"template": "t"}, "exactly one of name and generate_name"),
        ({"name": "a", "generate_name": "b-", "template": "t"}, "exactly one of name"),
    ],
)
def test_sandbox_manifest_refuses(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        api.sandbox_manifest(**kwargs)


def _sandbox(status: dict[str, Any], deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "a",
        "namespace": "team",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-02T10:00:00Z"
    return {"metadata": metadata, "status": status}


@pytest.mark.parametrize(
    ("status", "deleting", "phase", "ready"),
    [
        ({}, False, None, False),
        ({"phase": "Creating", "conditions": [{"type": "Ready", "status": "False"}]}, False, "Creating", False),
        ({"phase": "Running", "host": "h", "conditions": [{"type": "Scheduled", "status": "True"},
                                                          {"type": "Ready", "status": "True"}]}, False, "Running", True),
        ({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}, True, "Running", True),
    ],
)  # fmt: skip
def test_state_of(status: dict[str, Any], deleting: bool, phase: str | None, ready: bool) -> None:
    state = api.state_of(_sandbox(status, deleting))
    assert (state.name, state.namespace, state.uid, state.resource_version) == (
        "a",
        "team",
        "u-1",
        "7",
    )
    assert (state.phase, state.ready, state.deleting) == (phase, ready, deleting)


def test_exec_and_terminal_queries() -> None:
    assert api.exec_query(["sh", "-c", "echo hi"], stdin=True, env={"A": "1"}) == [
        ("command", "sh"), ("command", "-c"), ("command", "echo hi"),
        ("stdin", "true"), ("stdout", "true"), ("stderr", "true"), ("tty", "false"),
        ("env", "A=1"),
    ]  # fmt: skip
    assert ("stderr", "false") in api.exec_query(["top"], stdin=True, tty=True)
    with pytest.raises(ValueError, match="command is empty"):
        api.exec_query([], stdin=False)
    assert api.terminal_query("s" * 32, ["bash"], {"TERM": "xterm"}) == [
        ("session", "s" * 32), ("command", "bash"), ("env", "TERM=xterm"),
    ]  # fmt: skip
    assert api.files_query("/root/a", 0o600) == [("path", "/root/a"), ("mode", "0600")]
    with pytest.raises(ValueError, match="absolute"):
        api.files_query("root/a")


def test_token_request_and_answer() -> None:
    assert api.token_request(["terminal", "files"], 600) == {
        "apiVersion": "subresources.tux.io/v1alpha1",
        "kind": "SandboxToken",
        "spec": {"scopes": ["terminal", "files"], "expirationSeconds": 600},
    }
    assert "expirationSeconds" not in api.token_request(["exec"], None)["spec"]
    for bad in ([], ["root"]):
        with pytest.raises(ValueError, match="scopes must be some of"):
            api.token_request(bad, None)
    token = api.token_of({
        "metadata": {"name": "a", "namespace": "team", "uid": "u-1"},
        "spec": {"scopes": ["terminal"]},
        "status": {"token": "x.y.z", "expirationTimestamp": "2026-12-02T10:10:00Z"},
    })  # fmt: skip
    assert token == api.VisitorToken(
        "x.y.z", datetime(2026, 12, 2, 10, 10, tzinfo=UTC), "team", "a", "u-1", ("terminal",)
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, SandboxInvalid), (401, SandboxUnauthorized), (403, SandboxForbidden),
     (404, SandboxNotFound), (409, SandboxConflict), (422, SandboxInvalid), (502, SandboxError)],
)  # fmt: skip
def test_errors_carry_the_servers_status(status: int, kind: type[SandboxError]) -> None:
    body = {
        "kind": "Status",
        "status": "Failure",
        "reason": "Why",
        "message": "because",
        "code": status,
    }
    error = error_for(status, json.dumps(body).encode(), "/p")
    assert type(error) is kind
    assert (error.status, error.reason, error.message, dict(error.body)) == (
        status,
        "Why",
        "because",
        body,
    )


def test_errors_of_plain_text_and_empty_bodies() -> None:
    assert error_for(503, b"service unavailable\n", "/p").message == "service unavailable"
    assert error_for(500, b"", "/p").message == "/p: HTTP 500"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("box:/root/a", RemotePath(None, "box", "/root/a")),
        ("team/box:/root/", RemotePath("team", "box", "/root")),
        ("box:/a/../b", RemotePath(None, "box", "/b")),
        ("local.txt", "local.txt"),
        ("./a:b", "./a:b"),
        ("/abs/a:b", "/abs/a:b"),
        ("-", "-"),
        ("C:/x", "C:/x"),  # not a DNS label: a local name
    ],
)
def test_cp_locations(text: str, found: RemotePath | str) -> None:
    assert parse_location(text) == found


def test_cp_refuses_a_relative_path_in_a_sandbox() -> None:
    with pytest.raises(SandboxInvalid, match="must be absolute"):
        parse_location("box:root/a")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["exec", "box", "--", "sh", "-c", "echo -n x"],
         {"verb": "exec", "sandbox": "box", "command": ["sh", "-c", "echo -n x"], "stdin": False}),
        (["-n", "team", "exec", "-i", "box", "--", "wc"], {"namespace": "team", "stdin": True, "command": ["wc"]}),
        (["exec", "box", "-n", "team", "--context", "c", "--kubeconfig", "k", "--", "id"],
         {"namespace": "team", "context": "c", "kubeconfig": "k"}),
        (["shell", "visitor-42"], {"verb": "shell", "session": None, "command": [], "namespace": None}),
        (["shell", "visitor-42", "--session", "abcdefgh", "--", "bash"], {"session": "abcdefgh", "command": ["bash"]}),
        (["exec", "box", "--", "ls", "--", "-x"], {"command": ["ls", "--", "-x"]}),
        (["cp", "a", "box:/b"], {"verb": "cp", "source": "a", "destination": "box:/b"}),
        (["token", "box", "--scope", "exec", "--scope", "files", "--duration", "60", "-o", "json"],
         {"scope": ["exec", "files"], "duration": 60, "output": "json"}),
    ],
)  # fmt: skip
def test_plugin_command_line(argv: list[str], expected: dict[str, Any]) -> None:
    parsed = vars(parse(argv))
    assert {key: parsed[key] for key in expected} == expected


def test_plugin_refuses_an_unknown_scope(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["token", "box", "--scope", "root"])
    assert "invalid choice: 'root'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["exec", "box"])
    assert "exec needs a command" in capsys.readouterr().err


# ----- streams, against a WebSocket server on loopback that speaks remote-command -------------


async def _agent_like(ws: ServerConnection) -> None:
    """Echo stdin on stdout until it is closed, then its byte count on stderr and exit 3."""
    count = 0
    async for message in ws:
        assert isinstance(message, bytes)
        if message == rc.close_frame(rc.STDIN):
            await ws.send(rc.data_frame(rc.STDERR, str(count).encode()))
            await ws.send(rc.data_frame(rc.ERROR, rc.status_payload(rc.exit_code_status(3))))
            await ws.close()
            return
        if message[:1] == b"\x00":
            count += len(message) - 1
            await ws.send(rc.data_frame(rc.STDOUT, message[1:]))
        elif message[:1] == b"\x04":
            await ws.send(rc.data_frame(rc.STDOUT, b"size " + message[1:]))


async def _connected(url: str) -> Any:
    from websockets.asyncio.client import connect

    return await connect(url, subprotocols=[rc.V5])  # type: ignore[list-item]


async def test_exec_stream_sends_stdin_in_order_and_reads_the_exit_code() -> None:
    async with serve(_agent_like, "127.0.0.1", 0, subprotocols=[rc.V5]) as server:  # type: ignore[list-item]
        port = next(iter(server.sockets)).getsockname()[1]

        async def stdin() -> AsyncIterator[bytes]:
            for part in (b"a" * 300_000, b"b", b"c"):
                yield part

        stream = ExecStream(lambda: _connected(f"ws://127.0.0.1:{port}"), stdin())
        result = await collect(stream, timeout=30)
    assert result.exit_code == 3
    assert result.stdout == b"a" * 300_000 + b"bc"
    assert result.stderr == b"300002"


async def test_terminal_resize_send_recv_and_end() -> None:
    async with serve(_agent_like, "127.0.0.1", 0, subprotocols=[rc.V5]) as server:  # type: ignore[list-item]
        port = next(iter(server.sockets)).getsockname()[1]
        ws = await _connected(f"ws://127.0.0.1:{port}")
        killed: list[bool] = []

        async def kill() -> None:
            killed.append(True)

        terminal = AsyncTerminal(ws, "s1234567", "created", kill)
        await terminal.resize(100, 30)
        assert json.loads((await terminal.read_until(b"}", timeout=10))[5:]) == {
            "Width": 100,
            "Height": 30,
        }
        await terminal.send("ls\r")
        assert await terminal.read_until(b"ls\r", timeout=10) == b"ls\r"
        await ws.send(rc.close_frame(rc.STDIN))  # the fake's signal to exit
        assert await terminal.wait(timeout=10) == 3
        assert terminal.ended and await terminal.recv() == b""
        await terminal.kill()
        assert killed == [True]


async def test_input_chunks_from_a_pipe_and_from_a_file(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.write(write, b"piped")
    os.close(write)
    assert b"".join([c async for c in input_chunks(read)]) == b"piped"
    os.close(read)
    file = tmp_path / "in"
    file.write_bytes(b"x" * 200_000)
    fd = os.open(file, os.O_RDONLY)
    try:
        assert b"".join([c async for c in input_chunks(fd)]) == b"x" * 200_000
    finally:
        os.close(fd)
    await asyncio.sleep(0)
