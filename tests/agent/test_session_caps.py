"""Caps on concurrent sessions (per container, per agent) and the idle timeout."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import remote
from tests.agent.conftest import agent_with, run_container
from tests.support import Agent, pids_named


@pytest.fixture(scope="module")
def capped() -> Iterator[Agent]:
    with agent_with("capped", sessions_per_container=2, sessions_per_agent=3) as running:
        yield running


async def test_caps_per_container_and_per_agent(
    capped: Agent, name: str, streams: remote.Streams
) -> None:
    first, second, third = (run_container(capped, f"{name[:50]}-{i}") for i in range(3))
    try:
        await streams.open(capped, first.name, remote.terminal())
        # A command without a terminal counts too.
        await streams.open(capped, first.name, remote.piped(["sleep", "1000"]))
        refused = await streams.try_open(capped, first.name, remote.terminal())
        assert isinstance(refused, remote.Denied)
        assert refused.status == 429
        assert refused.body["reason"] == "TooManySessions"
        assert "sessions_per_container" in refused.body["message"]
        await streams.open(capped, second.name, remote.terminal())
        refused = await streams.try_open(capped, third.name, remote.terminal())
        assert isinstance(refused, remote.Denied)
        assert (refused.status, refused.body["reason"]) == (429, "TooManySessions")
        assert "sessions_per_agent" in refused.body["message"]
        # Ending one makes room again.
        await streams.opened[1].drop()
        await remote.eventually(lambda: not pids_named(first.init, "sleep"))
        await streams.open(capped, third.name, remote.terminal())
    finally:
        await streams.aclose()
        async with capped.async_client() as api:
            for container in (first, second, third):
                await api.delete(f"/v1/containers/{container.name}")


async def test_idle_session_is_ended(name: str, streams: remote.Streams) -> None:
    with agent_with("idle", session_idle_seconds=1) as idle:
        container = run_container(idle, name)
        stream = await streams.open(idle, name, remote.terminal())
        await stream.send("sleep 1000\n")
        await remote.eventually(lambda: pids_named(container.init, "sleep"))
        # No input, no output: ended, and the client told so.
        status = await stream.exit_status()
        assert status.exit_code is not None and status.exit_code >= 128
        assert await stream.closed() == 1000
        await remote.eventually(lambda: not pids_named(container.init, "sleep"))
