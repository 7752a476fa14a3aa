"""A real tuxio-agent process over real LXC, shared by the agent tests."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests import remote
from tests.support import Agent, destroy_everything, make_agent


@pytest.fixture(scope="session")
def agent() -> Iterator[Agent]:
    """The agent most tests share: no cores reserved, so both cores of a 2-core host are shared."""
    running = make_agent("agent", ["--reserved-cpus", "0"])
    running.start()
    yield running
    running.stop()
    destroy_everything(running)


@pytest.fixture
def http(agent: Agent) -> Iterator[httpx.Client]:
    with agent.client() as client:
        yield client


@pytest.fixture
async def api(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    """The shared agent's HTTP API, for async tests."""
    async with agent.async_client() as client:
        yield client


@pytest.fixture
def name(request: pytest.FixtureRequest, agent: Agent) -> Iterator[str]:
    """A fresh container name for this test, deleted afterwards."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    chosen = f"{base}-{uuid.uuid4().hex[:6]}"
    yield chosen
    with agent.client() as client:
        client.delete(f"/v1/containers/{chosen}")


@contextlib.contextmanager
def agent_with(name: str, **settings: object) -> Iterator[Agent]:
    """An agent of its own with some TUXIO_AGENT_* settings (a cap, a short grace, ...)."""
    env = {f"TUXIO_AGENT_{key.upper()}": str(value) for key, value in settings.items()}
    running = make_agent(name, ["--reserved-cpus", "0"], env)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        destroy_everything(running)


@dataclass(frozen=True)
class Container:
    """A running busybox container of a test: its name and the host PID of its init."""

    name: str
    init: int


def run_container(agent: Agent, name: str) -> Container:
    with agent.client() as client:
        response = client.put(f"/v1/containers/{name}", json={"template": "busybox"})
    assert response.status_code == 200, response.text
    return Container(name, response.json()["pid"])


@pytest.fixture
def container(agent: Agent, name: str) -> Container:
    """A running busybox container on the shared agent, deleted after the test."""
    return run_container(agent, name)


@pytest.fixture
async def streams() -> AsyncIterator[remote.Streams]:
    """Opens exec and terminal connections; closes them after the test."""
    opened = remote.Streams()
    yield opened
    await opened.aclose()
