"""A real tuxio-agent process over real LXC, shared by the agent tests."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

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
def name(request: pytest.FixtureRequest, agent: Agent) -> Iterator[str]:
    """A fresh container name for this test, deleted afterwards."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    chosen = f"{base}-{uuid.uuid4().hex[:6]}"
    yield chosen
    with agent.client() as client:
        client.delete(f"/v1/containers/{chosen}")
