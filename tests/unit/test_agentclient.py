"""The agent client builds exact requests and turns answers into models or typed errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tuxio.nodeagent.models import ContainerSpec, ExecRequest, Limits
from tuxio.operator.agentclient import AgentClient, AgentRejected, AgentUnreachable

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


def client_for(handler: Any) -> tuple[AgentClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)  # type: ignore[no-any-return]

    return AgentClient("http://agent:7443", "s3cret", transport=httpx.MockTransport(record)), seen


async def test_put_sends_the_spec_in_camel_case() -> None:
    client, seen = client_for(lambda r: httpx.Response(200, json=STATUS))
    spec = ContainerSpec(
        template="busybox",
        limits=Limits(memory=128 * 2**20, burst_cpu_seconds=20),
        labels={"a": "b"},
    )
    status = await client.put("web", spec)
    request = seen[0]
    assert (request.method, str(request.url)) == ("PUT", "http://agent:7443/v1/containers/web")
    assert request.headers["authorization"] == "Bearer s3cret"
    body = json.loads(request.content)
    assert body["limits"]["memory"] == 128 * 2**20
    assert body["limits"]["burstCpuSeconds"] == 20
    assert "cpuQuota" not in body["limits"]  # None is left out, the agent's default applies
    assert status.pid == 42
    assert status.labels == {"a": "b"}


async def test_list_passes_label_selectors() -> None:
    client, seen = client_for(lambda r: httpx.Response(200, json={"items": [STATUS]}))
    items = await client.list({"tux.io/sandbox-uid": "u1", "pool": "p"})
    assert seen[0].url.params.get_list("label") == ["tux.io/sandbox-uid=u1", "pool=p"]
    assert [i.name for i in items] == ["web"]


async def test_get_missing_is_none() -> None:
    body = {"reason": "ContainerNotFound", "message": "no container"}
    client, _ = client_for(lambda r: httpx.Response(404, json=body))
    assert await client.get("web") is None


async def test_4xx_is_rejected_with_the_agents_reason() -> None:
    body = {"reason": "InvalidSpec", "message": "limits.cpus is 9 but this host shares only 1"}
    client, _ = client_for(lambda r: httpx.Response(422, json=body))
    with pytest.raises(AgentRejected) as caught:
        await client.put("web", ContainerSpec(template="busybox"))
    assert caught.value.status == 422
    assert caught.value.reason == "InvalidSpec"
    assert "shares only 1" in str(caught.value)


async def test_5xx_and_network_errors_are_unreachable() -> None:
    client, _ = client_for(lambda r: httpx.Response(500, text="boom"))
    with pytest.raises(AgentUnreachable) as caught:
        await client.host()
    assert caught.value.body is None

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, _ = client_for(refuse)
    with pytest.raises(AgentUnreachable) as refused:
        await client.delete("web")
    assert refused.value.reason == "Unreachable"


async def test_exec_waits_longer_than_the_command() -> None:
    result = {
        "exitCode": 0,
        "stdout": "ok\n",
        "stderr": "",
        "stdoutTruncated": False,
        "stderrTruncated": False,
        "timedOut": False,
        "durationSeconds": 0.01,
    }
    client, seen = client_for(lambda r: httpx.Response(200, json=result))
    answer = await client.exec("web", ExecRequest(argv=["echo", "ok"], timeout_seconds=100))
    assert answer.stdout == "ok\n"
    assert json.loads(seen[0].content)["argv"] == ["echo", "ok"]
    assert seen[0].extensions["timeout"]["read"] == 130


@pytest.mark.parametrize(
    ("kwargs", "headers"),
    [
        ({}, {}),
        ({"if_match": "abc"}, {"if-match": '"abc"'}),
        ({"if_absent": True}, {"if-none-match": "*"}),
    ],
)
async def test_put_preconditions(kwargs: dict[str, Any], headers: dict[str, str]) -> None:
    client, seen = client_for(lambda r: httpx.Response(200, json=STATUS))
    await client.put("web", ContainerSpec(template="busybox"), **kwargs)
    sent = {k: v for k, v in seen[0].headers.items() if k in ("if-match", "if-none-match")}
    assert sent == headers


async def test_412_is_rejected_as_precondition_failed() -> None:
    body = {"reason": "PreconditionFailed", "message": "If-Match: container web converged to x"}
    client, _ = client_for(lambda r: httpx.Response(412, json=body))
    with pytest.raises(AgentRejected) as caught:
        await client.put("web", ContainerSpec(template="busybox"), if_match="abc")
    assert caught.value.status == 412
    assert caught.value.reason == "PreconditionFailed"
