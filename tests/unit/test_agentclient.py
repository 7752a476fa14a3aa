"""The agent client builds exact requests and turns answers into models or typed errors.

Against a real HTTP server on loopback (aiohttp's), which records what it was sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.support import loopback_server
from tests.unit.fakes import host_record
from tuxio.nodeagent.models import ContainerSpec, ExecRequest, Limits
from tuxio.operator.agentclient import (
    AgentClient,
    AgentRejected,
    AgentUnauthorized,
    AgentUnreachable,
)
from tuxio.operator.agents import AgentRegistry

STATUS: dict[str, Any] = {
    "name": "web",
    "state": "running",
    "pid": 42,
    "template": "busybox",
    "labels": {"a": "b"},
    "specHash": "abc",
    "spec": {"template": "busybox"},
    "createdAt": "2026-01-01T00:00:00Z",
    "startedAt": "2026-01-01T00:00:01Z",
    "limits": None,
    "burst": None,
    "usage": None,
}


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Agent:
    """A stand-in agent: answers with `reply`, records every request."""

    reply: Callable[[web.Request], web.StreamResponse] = lambda _: web.json_response(STATUS)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    delay: float = 0.0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(
                request.method,
                request.path,
                list(request.query.items()),
                {k.lower(): v for k, v in request.headers.items()},
                await request.read(),
            )
        )
        await asyncio.sleep(self.delay)
        return self.reply(request)


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    fake = Agent()
    async with loopback_server(fake.handle) as url:
        fake.url = url
        yield fake


@pytest.fixture
async def client(agent: Agent) -> AsyncIterator[AgentClient]:
    async with AgentClient(agent.url, "s3cret", timeout=5) as made:
        yield made


async def test_put_sends_the_spec_in_camel_case(agent: Agent, client: AgentClient) -> None:
    spec = ContainerSpec(
        template="busybox",
        limits=Limits(memory=128 * 2**20, burst_cpu_seconds=20),
        labels={"a": "b"},
    )
    status = await client.put("web", spec)
    (request,) = agent.seen
    assert (request.method, request.path) == ("PUT", "/v1/containers/web")
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body["limits"]["memory"] == 128 * 2**20
    assert body["limits"]["burstCpuSeconds"] == 20
    assert "cpuQuota" not in body["limits"]  # None is left out, the agent's default applies
    assert status.pid == 42
    assert status.labels == {"a": "b"}


@pytest.mark.parametrize(
    ("kwargs", "headers"),
    [
        ({}, {}),
        ({"if_match": "abc"}, {"if-match": '"abc"'}),
        ({"if_absent": True}, {"if-none-match": "*"}),
    ],
)
async def test_put_preconditions(
    agent: Agent, client: AgentClient, kwargs: dict[str, Any], headers: dict[str, str]
) -> None:
    await client.put("web", ContainerSpec(template="busybox"), **kwargs)
    sent = {k: v for k, v in agent.seen[0].headers.items() if k in ("if-match", "if-none-match")}
    assert sent == headers


async def test_list_passes_label_selectors(agent: Agent, client: AgentClient) -> None:
    agent.reply = lambda _: web.json_response({"items": [STATUS]})
    items = await client.list({"tux.io/sandbox-uid": "u1", "pool": "p"})
    assert agent.seen[0].path == "/v1/containers"
    assert agent.seen[0].query == [("label", "tux.io/sandbox-uid=u1"), ("label", "pool=p")]
    assert [i.name for i in items] == ["web"]


async def test_get_missing_is_none(agent: Agent, client: AgentClient) -> None:
    body = {"reason": "ContainerNotFound", "message": "no container"}
    agent.reply = lambda _: web.json_response(body, status=404)
    assert await client.get("web") is None


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (422, "InvalidSpec", "limits.cpus is 9 but this host shares only 1"),
        (412, "PreconditionFailed", "If-Match: container web converged to x"),
    ],
)
async def test_4xx_is_rejected_with_the_agents_reason(
    agent: Agent, client: AgentClient, status: int, reason: str, message: str
) -> None:
    agent.reply = lambda _: web.json_response({"reason": reason, "message": message}, status=status)
    with pytest.raises(AgentRejected) as caught:
        await client.put("web", ContainerSpec(template="busybox"))
    assert caught.value.status == status
    assert caught.value.reason == reason
    assert message in str(caught.value)


async def test_5xx_and_network_errors_are_unreachable(agent: Agent, client: AgentClient) -> None:
    agent.reply = lambda _: web.Response(status=500, text="boom")
    with pytest.raises(AgentUnreachable) as caught:
        await client.host()
    assert caught.value.body is None
    assert "boom" in str(caught.value)

    async with AgentClient("http://127.0.0.1:9", "s3cret", timeout=5) as nobody:  # discard port
        with pytest.raises(AgentUnreachable) as refused:
            await nobody.delete("web")
    assert refused.value.reason == "Unreachable"


async def test_exec_sends_the_argv(agent: Agent, client: AgentClient) -> None:
    result = {
        "exitCode": 0,
        "stdout": "ok\n",
        "stderr": "",
        "stdoutTruncated": False,
        "stderrTruncated": False,
        "timedOut": False,
        "durationSeconds": 0.01,
    }
    agent.reply = lambda _: web.json_response(result)
    answer = await client.exec("web", ExecRequest(argv=["echo", "ok"], timeout_seconds=100))
    assert answer.stdout == "ok\n"
    assert (agent.seen[0].method, agent.seen[0].path) == ("POST", "/v1/containers/web/exec")
    assert json.loads(agent.seen[0].body)["argv"] == ["echo", "ok"]


async def test_exec_waits_longer_than_the_client_timeout(agent: Agent) -> None:
    """A command may run for its own timeout: exec waits that long plus a margin, while
    every other call gives up after the client's timeout."""
    agent.delay = 1.5
    async with AgentClient(agent.url, "s3cret", timeout=1) as slow:
        with pytest.raises(AgentUnreachable) as timed_out:
            await slow.put("web", ContainerSpec(template="busybox"))
        assert "TimeoutError" in str(timed_out.value)
        agent.reply = lambda _: web.json_response(
            {
                "exitCode": 0,
                "stdout": "",
                "stderr": "",
                "stdoutTruncated": False,
                "stderrTruncated": False,
                "timedOut": False,
                "durationSeconds": 1.5,
            }
        )
        answer = await slow.exec("web", ExecRequest(argv=["sleep", "1"], timeout_seconds=5))
    assert answer.exit_code == 0


def _takes(*tokens: str) -> Callable[[web.Request], web.StreamResponse]:
    """An agent that takes only `tokens`, as the real one answers otherwise."""

    def reply(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") in {f"Bearer {t}" for t in tokens}:
            return web.json_response(STATUS)
        return web.json_response({"reason": "Unauthorized", "message": "bad token"}, status=401)

    return reply


def _tokens_sent(agent: Agent) -> list[str]:
    return [seen.headers["authorization"].removeprefix("Bearer ") for seen in agent.seen]


async def test_401_is_unauthorized_not_rejected(agent: Agent, client: AgentClient) -> None:
    agent.reply = _takes("another")
    with pytest.raises(AgentUnauthorized) as caught:
        await client.get("web")
    assert not isinstance(caught.value, AgentRejected | AgentUnreachable)
    assert (caught.value.status, caught.value.reason) == (401, "Unauthorized")


async def test_the_previous_token_is_tried_after_a_401_and_then_kept(agent: Agent) -> None:
    """During a rotation the agent may not have the new token yet: the old one still opens
    it, and is sent first from then on (no 401 per call)."""
    agent.reply = _takes("old")
    async with AgentClient(agent.url, "new", previous_token="old", timeout=5) as rotating:
        await rotating.get("web")
        await rotating.get("web")
        assert _tokens_sent(agent) == ["new", "old", "old"]
        agent.reply = _takes("new")  # the agent picked up the new one and dropped the old
        await rotating.get("web")
    assert _tokens_sent(agent)[3:] == ["old", "new"]


async def test_a_401_makes_the_registry_read_the_secret_again(agent: Agent) -> None:
    secrets = [{"token": "before"}, {"token": "after"}]
    reads: list[str] = []

    async def read_secret(namespace: str, name: str) -> dict[str, str]:
        reads.append(f"{namespace}/{name}")
        return secrets[len(reads) - 1]

    host = host_record("h1", agent.url)
    # The stand-in serves http on the loopback.
    registry = AgentRegistry(read_secret, timeout=5, allow_loopback_plaintext=True)
    agent.reply = _takes("after")
    try:
        first = await registry.client(host)
        assert await registry.client(host) is first  # cached while it works
        with pytest.raises(AgentUnauthorized):
            await first.get("web")
        second = await registry.client(host)
        assert second is not first
        assert (await second.get("web")) is not None
    finally:
        await registry.close()
    ref = host.spec.credentials_secret_ref
    assert reads == [f"{ref.namespace}/{ref.name}"] * 2
    assert _tokens_sent(agent) == ["before", "after"]
