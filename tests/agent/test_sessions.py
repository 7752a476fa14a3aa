"""Terminal sessions outlive their connection: reattach with replay, one client at a time,
the list and the end of sessions, and what is left when a client never comes back (nothing)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import remote
from tests.agent.conftest import Container, agent_with, run_container
from tests.support import (
    Agent,
    commands_in,
    lxc_attach_children,
    pids_named,
    process_stat,
    zombies_of,
)
from tuxio.common import remotecommand as rc


def new_id() -> str:
    return uuid.uuid4().hex


def only_init_left(container: Container) -> bool:
    return list(commands_in(container.init)) == [container.init]


async def test_reattach_replays_recent_output(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    session = new_id()
    first = await streams.open(agent, container.name, remote.terminal(session=session))
    assert (first.session, first.state) == (session, "created")
    await first.expect(r"# ")
    await first.send("echo before-$((6*7))\n")
    await first.expect(r"before-42\r\n")
    await first.drop()
    await remote.eventually(lambda: _detached(agent, container.name, session))
    second = await streams.open(agent, container.name, remote.terminal(session=session))
    assert (second.session, second.state) == (session, "resumed")
    await second.expect(r"before-42\r\n")  # replayed
    assert second.frames[0] == rc.Frame(rc.STDOUT, b"")
    mark = second.mark()
    await second.send("echo after-$((7*7))\n")  # the same shell goes on
    await second.expect(r"after-49\r\n", since=mark)
    await second.send("exit 4\n")
    assert (await second.exit_status()).exit_code == 4


async def test_output_made_while_detached_is_kept(
    agent: Agent, container: Container, api: httpx.AsyncClient, streams: remote.Streams
) -> None:
    session = new_id()
    first = await streams.open(agent, container.name, remote.terminal(session=session))
    await first.expect(r"# ")
    marker = f"/tmp/{session[:8]}"
    # Waits (in the container) for the marker the test makes once the client is gone.
    await first.send(f"until [ -e {marker} ]; do sleep 0.1; done\n")
    await first.send("echo detached-$((8*8)); exit 6\n")
    await first.drop()
    await remote.eventually(lambda: _detached(agent, container.name, session))
    touched = await api.post(
        f"/v1/containers/{container.name}/exec", json={"argv": ["touch", marker]}
    )
    assert touched.json()["exitCode"] == 0
    await remote.eventually(lambda: _exited(agent, container.name, session))
    second = await streams.open(agent, container.name, remote.terminal(session=session))
    assert second.state == "resumed"
    assert (await second.exit_status()).exit_code == 6
    assert b"detached-64\r\n" in second.stdout
    # Delivered: the session is gone now.
    await remote.eventually(lambda: _gone(agent, container.name, session))


async def test_one_client_at_a_time(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    session = new_id()
    first = await streams.open(agent, container.name, remote.terminal(session=session))
    await first.expect(r"# ")
    second = await streams.open(agent, container.name, remote.terminal(session=session))
    assert await first.closed() == 4001
    mark = second.mark()
    await second.send("echo only-$((5*5))\n")
    await second.expect(r"only-25\r\n", since=mark)
    assert b"only-25" not in first.stdout
    await second.send("exit\n")
    assert (await second.exit_status()).exit_code == 0


async def test_list_and_end_sessions(
    agent: Agent, container: Container, api: httpx.AsyncClient, streams: remote.Streams
) -> None:
    session = new_id()
    stream = await streams.open(agent, container.name, remote.terminal(session=session))
    await stream.expect(r"# ")
    items = (await api.get(f"/v1/containers/{container.name}/sessions")).json()["items"]
    assert [(i["id"], i["command"], i["attached"], i["exited"]) for i in items] == [
        (session, ["/bin/sh", "-l"], True, False)
    ]
    assert items[0]["exitCode"] is None and items[0]["createdAt"]
    await stream.send("sleep 1000\n")
    await remote.eventually(lambda: pids_named(container.init, "sleep"))
    ended = await api.delete(f"/v1/containers/{container.name}/sessions/{session}")
    assert ended.status_code == 200, ended.text
    assert ended.json()["exited"] is True
    # The attached client is told how it ended, and the connection closes normally.
    status = await stream.exit_status()
    assert status.exit_code is not None and status.exit_code >= 128
    assert await stream.closed() == 1000
    assert only_init_left(container)
    assert await _sessions(api, container.name) == []
    missing = await api.delete(f"/v1/containers/{container.name}/sessions/{session}")
    assert missing.status_code == 404
    assert missing.json()["reason"] == "SessionNotFound"


async def test_deleting_the_container_ends_its_sessions(
    agent: Agent, container: Container, api: httpx.AsyncClient, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.terminal())
    await stream.expect(r"# ")
    attach = _lxc_attach_of(agent)
    assert (await api.delete(f"/v1/containers/{container.name}")).json()["deleted"] is True
    await stream.exit_status()
    assert await stream.closed() == 1000
    assert agent.proc is not None
    await remote.eventually(lambda: all(process_stat(pid) is None for pid in attach))
    assert not zombies_of(agent.proc.pid)


async def test_stopping_the_container_ends_its_sessions(
    agent: Agent, container: Container, api: httpx.AsyncClient, streams: remote.Streams
) -> None:
    session = new_id()
    stream = await streams.open(agent, container.name, remote.terminal(session=session))
    await stream.expect(r"# ")
    stopped = await api.put(
        f"/v1/containers/{container.name}", json={"template": "busybox", "state": "stopped"}
    )
    assert stopped.status_code == 200, stopped.text
    await stream.exit_status()
    assert await stream.closed() == 1000
    assert await _sessions(api, container.name) == []


@pytest.fixture(scope="module")
def short_grace() -> Iterator[Agent]:
    with agent_with("grace", session_grace_seconds=1, session_hangup_seconds=1) as running:
        yield running


async def test_unresumed_session_leaves_nothing_behind(
    short_grace: Agent, name: str, streams: remote.Streams
) -> None:
    container = run_container(short_grace, name)
    stream = await streams.open(short_grace, name, remote.terminal())
    await stream.expect(r"# ")
    attach = _lxc_attach_of(short_grace)
    # A job, one that ignores the hang-up, one in a process group of its own, a daemon (it
    # left the tree and the session: double fork, setsid, reparented to the container's init),
    # the foreground.
    await stream.send("sleep 1001 & (trap '' HUP; exec sleep 1002) &\n")
    await stream.send("sh -c 'trap \"\" HUP; sleep 1003' &\n")
    await stream.send("(setsid sleep 1005 </dev/null >/dev/null 2>&1 &)\n")
    await remote.eventually(lambda: _daemon_of(container, "1005") is not None)
    await stream.send("sleep 1004\n")
    await remote.eventually(lambda: len(pids_named(container.init, "sleep")) == 5)
    daemon = _daemon_of(container, "1005")
    assert daemon is not None
    stat = process_stat(daemon)
    assert stat is not None
    # It really escaped what a session and a tree would catch: its parent is the container's
    # init and its session is its own.
    assert (stat[2], stat[3]) == (container.init, daemon), stat
    await stream.drop()
    # Hung up, then killed: only the container's init is left, and the agent reaped its child.
    await remote.eventually(
        lambda: only_init_left(container), message=lambda: commands_in(container.init)
    )
    assert short_grace.proc is not None
    await remote.eventually(lambda: all(process_stat(pid) is None for pid in attach))
    assert not zombies_of(short_grace.proc.pid)
    assert not [p for p in commands_in(container.init).values() if p != "init"]
    async with short_grace.async_client() as api:
        assert await _sessions(api, name) == []
        await api.delete(f"/v1/containers/{name}")


def _daemon_of(container: Container, argument: str) -> int | None:
    """The container's `sleep <argument>`, when it runs."""
    for pid in pids_named(container.init, "sleep"):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in argv:
            return pid
    return None


def _lxc_attach_of(agent: Agent) -> list[int]:
    """The agent's lxc-attach children (one per session)."""
    found = lxc_attach_children(agent)
    assert found, "no lxc-attach running under the agent"
    return found


async def _sessions(api: httpx.AsyncClient, container: str) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/containers/{container}/sessions")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _session(agent: Agent, container: str, session: str) -> dict[str, Any] | None:
    async with agent.async_client() as api:
        items = await _sessions(api, container)
    return next((i for i in items if i["id"] == session), None)


async def _detached(agent: Agent, container: str, session: str) -> bool:
    found = await _session(agent, container, session)
    return bool(found and not found["attached"])


async def _exited(agent: Agent, container: str, session: str) -> bool:
    found = await _session(agent, container, session)
    return bool(found and found["exited"])


async def _gone(agent: Agent, container: str, session: str) -> bool:
    return await _session(agent, container, session) is None
